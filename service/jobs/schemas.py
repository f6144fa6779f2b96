"""Response shapes of the job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobOut(BaseModel):
    id: str
    model: str
    kind: str = "unlearn"  # unlearn | train
    reason: str | None = None  # a training job's: requested | exactness
    method_reason: str | None = None  # why this method ran
    method: str
    params: dict[str, Any]
    policy: dict[str, Any]
    seed: int
    status: str
    stage: str | None
    progress: float
    base_version: int | None
    result_version: int | None
    deletion_requests: list[str]
    n_requests: int
    n_samples: int
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: dict[str, Any] | None
    metrics: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = None


class TrainingJobIn(BaseModel):
    """``POST /v1/models/{name}/training-jobs``: what to train on, and how."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(max_length=200)
    dataset_version: str | None = Field(None, max_length=20, description="a number or latest (default)")
    recipe: dict[str, Any] | None = Field(None, description="the retrain method's params plus seed")
