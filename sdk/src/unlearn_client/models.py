"""Typed answers of the API (pydantic). Field names follow the service's OpenAPI schemas; a test
builds the service's OpenAPI and checks every field here against it, so the two cannot drift.

Members the server adds later are kept (``extra="allow"``), so an older SDK still parses a newer
server's answers and ``model_dump()`` shows everything the server sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_REQUEST_STATUSES = frozenset({"completed", "failed", "cancelled"})


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Model(ApiModel):
    """A registered model (``ModelOut``)."""

    name: str
    task: str
    architecture: dict[str, Any]
    description: str | None = None
    tags: list[str] = []
    latest_version: int | None = None
    created_at: datetime
    updated_at: datetime


class EvalSet(ApiModel):
    sha256: str
    n_samples: int | None = None


class TrainingData(ApiModel):
    """The registered training set (and its version) a model version was trained on."""

    dataset: str
    version: int


class Version(ApiModel):
    """A model version (``VersionOut``); ``created_by_job`` is set on versions a job published.

    A version that still holds erased data is retired when the erasing job publishes
    (``status == "retired"``, ``retired_reason == "erasure"``): its checkpoint answers 410 Gone.
    """

    version: int
    sha256: str
    size_bytes: int
    parent_version: int | None = None
    created_by_job: str | None = None
    status: str
    description: str | None = None
    eval_set: EvalSet | None = None
    metrics: dict[str, Any] | None = None
    training_data: TrainingData | None = None
    recipe: dict[str, Any] | None = None
    retired_at: datetime | None = None
    retired_reason: str | None = None
    created_at: datetime


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
    params: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    base_version: int | None = None
    result_version: int | None = None
    n_samples: int
    forget_set_sha256: str
    forget_set_purged: bool
    # Made from a reference to the model's registered training set (subject, sample ids), not
    # from samples sent; erasure_id names the dataset erasure that made it, if one did.
    by_reference: bool = False
    erasure_id: str | None = None
    # "already_erased": completed at once, with no job, as the samples were erased before.
    outcome: str | None = None
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


class Job(ApiModel):
    """An unlearning job: one batch of deletion requests on one model version (``JobOut``)."""

    id: str
    model: str
    method: str
    params: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    seed: int
    status: str
    stage: str | None = None
    progress: float = 0.0
    base_version: int | None = None
    result_version: int | None = None
    deletion_requests: list[str] = []
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


class AuditEvent(ApiModel):
    """One link of the hash chain (``AuditEventOut``)."""

    seq: int
    # Kept as the exact string the server hashed, so an auditor can recompute the hash.
    ts: str
    tenant_id: str | None = None
    actor: str
    action: str
    model: str | None = None
    object_id: str | None = None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class SignedHead(ApiModel):
    """A chain head the service signed: the chain must still reach it (``SignedHeadOut``)."""

    seq: int
    hash: str
    signed_at: str
    key_id: str


class ChainVerification(ApiModel):
    """The answer of ``GET /v1/audit/verify``: the caller's tenant's chain."""

    # The chain verified: the tenant's id ("system" for events of no tenant).
    chain: str | None = None
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    signed_head: SignedHead | None = None


class ChainStatus(ChainVerification):
    """One chain in the operator's view (``ChainOut``): its verification and its tenant."""

    tenant: str | None = None


class SignedDocument(ApiModel):
    """A document with the service's detached Ed25519 signature over its JCS form (RFC 8785):
    certificates, signed receipts, signed audit heads. Check it offline with ``signing_key()``."""

    document: dict[str, Any]
    signature: str  # base64url, unpadded
    key_id: str  # RFC 7638 thumbprint of the signing key
    alg: str | None = None
    canonicalization: str | None = None


class PublicKey(ApiModel):
    """The service's signing key (``/.well-known/unlearn-signing-key``)."""

    key_id: str
    alg: str
    canonicalization: str
    jwk: dict[str, Any]
    pem: str


class Receipt(ApiModel):
    """What a deletion request or an erasure did, as the service reports it (a free-form
    document: every member is kept and ``model_dump()`` gives it whole)."""


class ApiKey(ApiModel):
    """An API key as listed (``KeyOut``): never the secret."""

    id: str
    name: str
    tenant: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedApiKey(ApiKey):
    """The answer of ``POST /v1/keys`` (``KeyCreated``): ``key`` is shown this once only."""

    key: str


class Page(ApiModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next one (None: the end)."""

    items: list[T]
    next_cursor: str | None = None


class Health(ApiModel):
    status: str


class Readiness(ApiModel):
    status: str
    checks: dict[str, str] = {}


class CheckpointInfo(ApiModel):
    """What ``HEAD .../checkpoint`` says about a checkpoint, without downloading it."""

    sha256: str
    size_bytes: int
    etag: str
    # The numbered version's URL when the request named an alias such as "latest".
    content_location: str | None = None
    # The file name the server suggests (Content-Disposition), e.g. "digits-v2.safetensors".
    filename: str | None = None
