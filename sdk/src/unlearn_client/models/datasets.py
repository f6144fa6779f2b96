"""Registered training sets and erasures of data subjects."""

from __future__ import annotations

from datetime import datetime

from unlearn_client.models.base import ApiModel
from unlearn_client.models.states import TERMINAL_REQUEST_STATUSES


class Dataset(ApiModel):
    """A registered training set (``DatasetOut``)."""

    name: str
    task: str
    description: str | None = None
    latest_version: int | None = None
    created_at: datetime
    updated_at: datetime


class DatasetColumn(ApiModel):
    dtype: str
    shape: list[int]  # per sample


class DatasetUpload(ApiModel):
    format: str
    sha256: str


class DatasetErasure(ApiModel):
    """How an erasure rewrote a dataset version (``erasure`` of a version made by one)."""

    erased_samples: int
    shards_rewritten: int
    bytes_rewritten: int


class DatasetVersion(ApiModel):
    """A version of a training set (``DatasetVersionOut``): an upload, or an erasure's rewrite."""

    version: int
    status: str  # ready | retired (an erasure replaced it) | purged (its data is gone)
    source: str  # upload | erasure
    parent_version: int | None = None
    n_samples: int
    n_shards: int
    shard_samples: int
    size_bytes: int
    data_sha256: str
    columns: dict[str, DatasetColumn]
    sample_id_type: str
    has_subjects: bool
    n_subjects: int
    upload: DatasetUpload | None = None
    erasure: DatasetErasure | None = None
    description: str | None = None
    created_at: datetime
    retired_at: datetime | None = None


class ErasureRequest(ApiModel):
    """One model's deletion request within an erasure."""

    id: str
    model: str
    status: str
    job_id: str | None = None
    result_version: int | None = None
    outcome: str | None = None


class Erasure(ApiModel):
    """A data subject (or sample ids) erased from a training set and every model trained on it:
    one deletion request per model (``ErasureOut``)."""

    id: str
    dataset: str
    status: str  # queued | running | completed | failed (some model did not forget)
    subject_digest: str | None = None
    n_samples: int
    dataset_version: int  # the version the samples were found in
    result_dataset_version: int | None = None  # the version without them, once written
    outcome: str | None = None
    deletion_requests: list[ErasureRequest]
    created_at: datetime

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_REQUEST_STATUSES
