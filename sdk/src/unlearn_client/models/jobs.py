"""Unlearning jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from unlearn_client.models.base import ApiModel
from unlearn_client.models.states import TERMINAL_JOB_STATUSES


class Job(ApiModel):
    """An unlearning job: one batch of deletion requests on one model version (``JobOut``)."""

    id: str
    model: str
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    seed: int
    status: str
    stage: str | None = None
    progress: float = 0.0
    base_version: int | None = None
    result_version: int | None = None
    deletion_requests: list[str] = Field(default_factory=list)
    n_requests: int
    n_samples: int
    attempts: int
    max_attempts: int
    cancel_requested: bool = False
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES
