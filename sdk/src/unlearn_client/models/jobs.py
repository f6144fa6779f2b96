"""Unlearning jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from unlearn_client.models.base import ApiModel
from unlearn_client.models.states import TERMINAL_JOB_STATUSES


class Job(ApiModel):
    """A job (``JobOut``): ``kind == "unlearn"``, one batch of deletion requests on one model
    version; or ``kind == "train"``, a version trained from a dataset version and a recipe
    (``reason``: ``requested``, or ``exactness`` when eventual exactness asked for it).
    ``method_reason`` says why this method ran."""

    id: str
    model: str
    kind: str = "unlearn"
    reason: str | None = None
    method_reason: str | None = None
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
