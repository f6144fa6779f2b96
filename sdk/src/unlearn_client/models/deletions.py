"""Deletion requests, and what they did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from unlearn_client.models.base import ApiModel
from unlearn_client.models.states import TERMINAL_REQUEST_STATUSES


class Stage(ApiModel):
    """One step of a request's erasure: ``approximate`` (an unlearning method) or ``exact`` (a
    retrain without the data), and the version that has it."""

    stage: str
    version: int


class DeletionRequest(ApiModel):
    """A deletion (erasure) request (``DeletionRequestOut``)."""

    id: str
    model: str
    status: str
    job_id: str | None = None
    # The subject reference as an HMAC under the tenant's key: equal subjects match, but the
    # reference itself never comes back.
    subject_digest: str | None = None
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    base_version: int | None = None
    result_version: int | None = None
    n_samples: int
    forget_set_sha256: str
    forget_set_purged: bool
    # Made from a reference to the model's registered training set (subject, sample ids), not
    # from samples sent; erasure_id names the dataset erasure that made it, if one did.
    by_reference: bool = False
    erasure_id: str | None = None
    # "already_erased": completed at once, with no job, as the samples were erased before;
    # "policy_rejected": failed the acceptance policy, and ``retry`` may queue it again.
    outcome: str | None = None
    # Eventual exactness: the version retrained exactly without the samples, once there is one;
    # stages lists the approximate version and then the exact one.
    exact_version: int | None = None
    stages: list[Stage] = Field(default_factory=list)
    # Whether ``deletions.retry`` would queue it now; an uploaded forget set is kept until
    # retry_until (None by reference: the samples are read again from the training set).
    retryable: bool = False
    retry_until: datetime | None = None
    error: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_REQUEST_STATUSES


class SampleDigests(ApiModel):
    """The keyed digest of every forget sample of a request (``SampleDigestsOut``)."""

    request_id: str
    n_samples: int
    sample_digests: list[str]


class BulkDeletion(ApiModel):
    """The answer of a bulk intake (``BulkDeletionOut``): one request per item, in order."""

    items: list[DeletionRequest]


class Receipt(ApiModel):
    """What a deletion request or an erasure did, as the service reports it (a free-form
    document: every member is kept and ``model_dump()`` gives it whole)."""
