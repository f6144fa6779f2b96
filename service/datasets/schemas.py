"""Data set and version bodies (docs/datasets.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.datasets.states import DatasetTask
from service.registry.schemas import NAME_PATTERN


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique per tenant; used in URLs")
    task: DatasetTask
    description: str | None = Field(default=None, max_length=10_000)


class DatasetOut(BaseModel):
    name: str
    task: DatasetTask
    description: str | None
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


class ColumnOut(BaseModel):
    dtype: str
    shape: list[int] = Field(description="per-sample shape")


class UploadOut(BaseModel):
    format: str
    sha256: str


class ErasureOut(BaseModel):
    erased_samples: int
    shards_rewritten: int
    bytes_rewritten: int


class DatasetVersionOut(BaseModel):
    version: int
    status: str = Field(description="ready | retired (an erasure replaced it) | purged (its data is gone)")
    source: str = Field(description="upload | erasure")
    parent_version: int | None
    n_samples: int
    n_shards: int
    shard_samples: int
    size_bytes: int
    data_sha256: str
    columns: dict[str, ColumnOut]
    sample_id_type: str = Field(description="int | str")
    # Subject ids are stored as keyed digests and never returned; only whether there are any.
    has_subjects: bool
    n_subjects: int
    upload: UploadOut | None
    erasure: ErasureOut | None
    description: str | None
    created_at: datetime
    retired_at: datetime | None
