"""Request and response shapes of the deletion-request endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from service.jobs.policy import AcceptancePolicy
from service.jsonbody import MAX_NESTING, nesting_depth


class Samples(BaseModel):
    """Inline forget samples (small sets; larger ones go as a multipart file)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] | None = None
    labels: list[Any] | None = None
    input_ids: list[Any] | None = None
    attention_mask: list[Any] | None = None

    def as_mapping(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _shallow(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # pydantic, copy.deepcopy and json.dumps all recurse: refuse absurd nesting at the door.
    if value is not None and nesting_depth(value) > MAX_NESTING:
        raise ValueError(f"nested more than {MAX_NESTING} levels deep")
    return value


class RunSettings(BaseModel):
    """What a job runs with, as a request may ask: method, params and acceptance policy."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(None, max_length=64)
    params: dict[str, Any] | None = None
    policy: AcceptancePolicy | None = None

    _params_depth = field_validator("params")(_shallow)


class DeletionRequestIn(BaseModel):
    """The JSON form of ``POST /v1/models/{name}/deletion-requests``.

    Either ``samples`` (the forget set itself), or a reference to the model's registered
    training set: ``subject`` (every sample of that data subject) and/or ``sample_ids``.
    With ``samples``, ``subject`` is only a label.
    """

    model_config = ConfigDict(extra="forbid")

    samples: Samples | None = None
    # Strict: JSON true/false would otherwise be read as the sample ids 1 and 0.
    sample_ids: list[StrictStr | StrictInt] | None = Field(None, min_length=1, max_length=100_000)
    subject: str | None = Field(None, max_length=400)
    method: str | None = Field(None, max_length=64)
    params: dict[str, Any] | None = None
    base_version: int | None = Field(None, ge=1)

    _params_depth = field_validator("params")(_shallow)
    policy: AcceptancePolicy | None = None


class DeletionRequestOut(BaseModel):
    id: str
    model: str
    status: str
    job_id: str | None
    # HMAC-SHA256 of the subject under the tenant's key (service/privacy.py); search by the
    # subject itself with ?subject=.
    subject_digest: str | None
    method: str
    params: dict[str, Any]
    policy: dict[str, Any]
    base_version: int | None
    result_version: int | None
    n_samples: int
    forget_set_sha256: str
    forget_set_purged: bool
    by_reference: bool = False  # the samples were found in the model's registered training set
    erasure_id: str | None = None  # the subject erasure this request is part of
    outcome: str | None = None  # "already_erased": completed at once, nothing left to forget
    exact_version: int | None = None  # eventual exactness: the version retrained without it
    # e.g. [{"stage": "approximate", "version": 2}, {"stage": "exact", "version": 4}]
    stages: list[dict[str, Any]] = Field(default_factory=list)
    # Failed the acceptance policy (outcome "policy_rejected"): POST .../retry queues it again,
    # without an upload, while retryable; an uploaded forget set is kept until retry_until
    # (None by reference: the samples are read again from the registered training set).
    retryable: bool = False
    retry_until: datetime | None = None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RetryIn(RunSettings):
    """``POST /v1/deletion-requests/{id}/retry``: what to change for the new run (all optional).

    ``method`` and ``params`` as at intake (params refine the method's defaults; omitted, the
    request's own, or the new method's defaults); ``policy`` refines the request's policy.
    """


class DeletionRequestPage(BaseModel):
    items: list[DeletionRequestOut]
    next_cursor: str | None = None


class SampleDigestsOut(BaseModel):
    """The sha256 of every forget sample, keyed by HMAC-SHA256 under the tenant's key."""

    request_id: str
    n_samples: int
    sample_digests: list[str]


class BulkItem(BaseModel):
    """One deletion request of a bulk intake: its samples and subject."""

    model_config = ConfigDict(extra="forbid")

    samples: Samples
    subject: str | None = Field(None, max_length=400)


class BulkDeletionIn(RunSettings):
    """``POST /v1/models/{name}/deletion-requests/bulk``: many requests, one transaction.

    Method, params and policy apply to every item, so the requests batch into one job.
    """

    requests: list[BulkItem] = Field(min_length=1)


class BulkDeletionOut(BaseModel):
    items: list[DeletionRequestOut]
