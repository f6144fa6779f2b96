"""Request and response shapes of the deletion-request endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Samples(BaseModel):
    """Inline forget samples (small sets; larger ones go as a multipart file)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] | None = None
    labels: list[Any] | None = None
    input_ids: list[Any] | None = None
    attention_mask: list[Any] | None = None

    def as_mapping(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Policy(BaseModel):
    """Per-request overrides of the acceptance policy (bounded by the service settings).

    A job is accepted (its version published) when
      * eval accuracy dropped by at most ``max_eval_accuracy_drop`` (needs the version's eval set), and
      * if ``require_forgetting``: forgetting is reached, i.e. after unlearning
        forget_accuracy ≤ eval_accuracy + ``forget_accuracy_margin`` (the forget samples are
        recognised no better than unseen data), or the loss-based MIA AUC forget-vs-eval
        ≤ 0.5 + ``mia_auc_margin`` (a membership attack cannot tell them from unseen data).
        Without an eval set, forgetting means the forget accuracy fell or the forget loss rose.
      * with params ``{"scope": "class"}`` (the forget set is whole classes) utility is the eval
        accuracy on the other classes, and forgetting means forget_accuracy ≤ the method's
        ``forget_accuracy_target`` (default 0, as a model retrained without the class) +
        ``forget_accuracy_margin``.
    """

    model_config = ConfigDict(extra="forbid")

    max_eval_accuracy_drop: float | None = Field(None, ge=0, le=1)
    require_forgetting: bool | None = None
    forget_accuracy_margin: float | None = Field(None, ge=0, le=1)
    mia_auc_margin: float | None = Field(None, ge=0, le=0.5)


class DeletionRequestIn(BaseModel):
    """The JSON form of ``POST /v1/models/{name}/deletion-requests``."""

    model_config = ConfigDict(extra="forbid")

    samples: Samples
    subject: str | None = Field(None, max_length=400)
    method: str | None = Field(None, max_length=64)
    params: dict[str, Any] | None = None
    base_version: int | None = Field(None, ge=1)
    policy: Policy | None = None


class DeletionRequestOut(BaseModel):
    id: str
    model: str
    status: str
    job_id: str | None
    subject: str | None
    method: str
    params: dict[str, Any]
    policy: dict[str, Any]
    base_version: int | None
    result_version: int | None
    n_samples: int
    sample_digests: list[str]
    forget_set_sha256: str
    forget_set_purged: bool
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class DeletionRequestPage(BaseModel):
    items: list[DeletionRequestOut]
    next_cursor: str | None = None
