"""Response shapes of the job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class JobOut(BaseModel):
    id: str
    model: str
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
