"""SQLAlchemy 2 typed tables. The database, not the broker, is the source of truth for jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, UTCDateTime, utcnow


def new_id(prefix: str) -> str:
    # Prefixed ids tell a reader of a log line or URL what kind of object it names.
    return f"{prefix}_{uuid.uuid4().hex}"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # Keys are random 256-bit secrets, so a plain sha256 is a sound one-way hash; the prefix
    # (not secret) finds the row without scanning.
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("mdl"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))
    architecture: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"name", "config"}
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    latest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Per-model mutual exclusion of jobs: a compare-and-set on this row (works on both backends)
    # guarantees one running job per model, so no job forks from a version another job replaces.
    lock_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Eventual exactness: {"after_erasures": N, "after_hours": T} retrains exactly (service/jobs/
    # exactness.py) once N approximate versions, or T hours since the first, have piled up.
    exactness: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", lazy="raise")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("ver"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(32), default="ready")
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by_job: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The holdout used to verify jobs; inherited by versions a job creates.
    eval_set_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eval_set_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    eval_set_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The training data the version reflects (service/datasets) and how it was trained: enough
    # for the engine's trainer to retrain it. An unlearned version links the dataset version its
    # erasure left.
    dataset_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=True, index=True
    )
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # ready -> retired (downloads answer 410); its blob is deleted after a grace period.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retired_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)  # RetiredReason
    blob_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    model: Mapped[Model] = relationship(back_populates="versions", lazy="raise")


class Dataset(Base):
    """A tenant's training data set (service/datasets); its versions hold the samples."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("dst"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))  # DatasetTask
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    latest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DatasetVersion(Base):
    """An immutable set of samples: shards in the artifact store plus one index row per sample."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("dsv"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="ready")  # VersionStatus
    source: Mapped[str] = mapped_column(String(32))  # VersionSource: upload | erasure
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_samples: Mapped[int] = mapped_column(Integer)
    n_shards: Mapped[int] = mapped_column(Integer)
    shard_samples: Mapped[int] = mapped_column(Integer)  # samples per shard when written
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # all shards
    # sha256 of the shard list (number, sha256, samples): equal data, equal digest.
    data_sha256: Mapped[str] = mapped_column(String(64))
    # {"inputs": {"dtype": "float32", "shape": [64]}, ...}: per-sample shapes of the stored tensors.
    columns: Mapped[dict[str, Any]] = mapped_column(JSON)
    sample_id_kind: Mapped[str] = mapped_column(String(8))  # SampleIdKind: int | str
    n_subjects: Mapped[int] = mapped_column(Integer, default=0)
    # Fingerprint of the tenant key the subject digests were made with (None: no subject column).
    subject_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    upload_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    upload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # An erasure's cost: samples removed, shards and bytes written anew (the rest reused by key).
    erased_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shards_rewritten: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes_rewritten: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DatasetShard(Base):
    """One content-addressed blob (safetensors, up to shard_samples rows) of a version."""

    __tablename__ = "dataset_shards"

    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Indexed: whether any version still lists a blob decides whether it may be deleted.
    storage_key: Mapped[str] = mapped_column(String(400), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    n_samples: Mapped[int] = mapped_column(Integer)


class DatasetSample(Base):
    """The sample index: where each sample of a version lies, and whose it is (keyed digest)."""

    __tablename__ = "dataset_samples"
    __table_args__ = (
        # "every sample of subject X" in one version, or across versions
        Index("ix_dataset_samples_subject", "subject_digest", "dataset_version_id"),
        UniqueConstraint("dataset_version_id", "shard", "shard_row"),
    )

    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # HMAC-SHA256 of the subject id under the tenant's key (service/datasets/subjects.py), never raw.
    subject_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    shard: Mapped[int] = mapped_column(Integer)
    shard_row: Mapped[int] = mapped_column(Integer)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_model_status", "model_id", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    # queued -> running -> succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_requests: Mapped[int] = mapped_column(Integer, default=0)
    n_samples: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # Why this method: asked for, or the default for what the model has registered.
    method_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # JobKind: "unlearn" (deletion requests) or "train" (a version from a dataset version + recipe).
    kind: Mapped[str] = mapped_column(String(16), default="unlearn", server_default="unlearn")
    # A training job: what it trains on, and why ("requested", or "exactness" after erasures).
    dataset_version_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Erasure(Base):
    """A data subject's erasure from a training set, fanned out to every model trained on it."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("era"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    subject: Mapped[str | None] = mapped_column(String(400), nullable=True)
    sample_ids: Mapped[list[str]] = mapped_column(JSON)
    dataset_version: Mapped[int] = mapped_column(Integer)  # the version the samples were found in
    # Set when no model held the samples and the data set was erased at once.
    result_dataset_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)  # e.g. "already_erased"
    created_by_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("del"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    subject: Mapped[str | None] = mapped_column(String(400), nullable=True)
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # queued -> running -> completed | failed | cancelled
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    n_samples: Mapped[int] = mapped_column(Integer)
    sample_digests: Mapped[list[str]] = mapped_column(JSON)
    forget_set_sha256: Mapped[str] = mapped_column(String(64))
    # Null once the stored forget set is purged (after the job publishes, per retention setting).
    forget_set_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    forget_set_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # By reference (a registered training set): which samples, resolved at intake.
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), nullable=True, index=True)
    sample_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    erasure_id: Mapped[str | None] = mapped_column(ForeignKey("erasures.id"), nullable=True, index=True)
    # Why a request completed without a job (e.g. "already_erased"); None for a normal run.
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Eventual exactness: the version retrained without the samples (result_version is approximate).
    exact_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OutboxMessage(Base):
    """Messages to the broker, written in the same transaction as the state they announce."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(64))  # e.g. "job.run"
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("tenant_id", "key", "scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(400))  # method + path template, e.g. "POST /v1/models/x/..."
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    response_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditHead(Base):
    """One row per chain (a tenant's, or the system chain): serialises that chain's appends (row
    lock / BEGIN IMMEDIATE) so it never forks, and records its length and last hash."""

    __tablename__ = "audit_heads"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)  # tenant id, or "system"
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    """Append-only, hash-chained per chain: hash = sha256(prev_hash ‖ canonical JSON of the event).

    One chain per tenant (events without a tenant form the "system" chain), so a tenant's seq and
    head hash say nothing about another tenant's activity."""

    __tablename__ = "audit_events"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    """A chain head signed with the service's Ed25519 key: an event removed from the end of a
    chain (with its head row rewritten to match) is caught by the last signed head it no longer
    reaches."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_chain_seq", "chain", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))  # base64url, unpadded (64 bytes)


class Webhook(Base):
    """A tenant's callback URL for the events it names (of one model, or of the whole tenant)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("whk"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # None: every model of the tenant (and tenant-wide events: erasures).
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), nullable=True, index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The signing secret sealed with AES-GCM under a key derived from the service secret
    # (service/webhooks/sealing.py): HMAC needs the secret itself, so it cannot be hashed, and a
    # copy of the database alone must not let anyone forge our signatures.
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_by_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: an outbox row written in the transaction of the state change it
    announces, sent (and re-sent) by service/webhooks/delivery.py until delivered or dead."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
    )

    # Also the Standard Webhooks message id (webhook-id header): the same on every attempt, so a
    # receiver can drop a duplicate.
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("msg"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the body: {"type", "timestamp", "data"}
    status: Mapped[str] = mapped_column(String(16), default="pending")  # DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When it is due; while a sender holds it, the end of its claim (a crashed sender's claim lapses).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The audit event it announces.
    audit_chain: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
