"""Request and response shapes of subject erasures."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class ErasureIn(BaseModel):
    """``POST /v1/datasets/{name}/erasures``: a data subject, or sample ids, of the dataset."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, min_length=1, max_length=400)
    # Strict: JSON true/false would otherwise be read as the sample ids 1 and 0.
    sample_ids: list[StrictStr | StrictInt] | None = Field(None, min_length=1, max_length=100_000)


class ErasureRequestOut(BaseModel):
    id: str
    model: str
    status: str
    job_id: str | None
    result_version: int | None
    outcome: str | None


class ErasureOut(BaseModel):
    id: str
    dataset: str
    status: str  # queued | running | completed | failed (some model did not forget)
    subject_digest: str | None
    n_samples: int
    dataset_version: int  # the version the samples were found in
    result_dataset_version: int | None  # the version without them, once written
    outcome: str | None  # "already_erased"
    deletion_requests: list[ErasureRequestOut]
    created_at: datetime


class ErasurePage(BaseModel):
    items: list[ErasureOut]
    next_cursor: str | None = None
