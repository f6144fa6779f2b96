"""State transitions of a job, shared by the worker, the reconciler and the cancel endpoint.

Every transition is one conditional UPDATE whose WHERE clause states the state it expects, and
the caller checks the row count: two workers, a worker and the reconciler, or a worker and a
cancel can race on a job, and exactly one of them wins each transition.

    queued --claim--> running --publish--> succeeded
      ^                  |  \\--fail------> failed | cancelled
      +----requeue-------+   (lease expired or unexpected error, attempts left)

The per-model lock (``models.lock_job_id``) is taken in the claim transaction and released in
the transaction that ends the run, so no two jobs of one model ever run at the same time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.db import UTCDateTime, utcnow
from service.outbox import enqueue_job
from service.tables import DeletionRequest, Job, Model

log = structlog.get_logger("service.jobs")

TERMINAL_JOB = ("succeeded", "failed", "cancelled")
TERMINAL_REQUEST = ("completed", "failed", "cancelled")
REQUEST_STATUS_FOR_JOB = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}


def json_safe(value: Any) -> Any:
    """JSON without NaN/Infinity (PostgreSQL's json type rejects them): non-finite floats → None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value


def db_time(value: datetime) -> Any:
    # A typed literal, so SQLite compares and stores it in the column's own text format.
    return literal(value, UTCDateTime())


@dataclass(frozen=True)
class Claim:
    job_id: str
    model_id: str
    tenant_id: str
    model_name: str
    base_version: int
    attempt: int
    max_attempts: int
    method: str
    params: dict[str, Any]
    policy: dict[str, Any]
    seed: int


class ClaimOutcome:
    NOT_CLAIMABLE = "not_claimable"
    MODEL_BUSY = "model_busy"


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Claim | str:
    """Claim the job and the model lock in the caller's transaction.

    Returns a Claim, or ClaimOutcome.NOT_CLAIMABLE (finished, taken by a live worker, out of
    attempts, or unknown: a duplicate delivery does nothing), or ClaimOutcome.MODEL_BUSY (another
    job of the model runs; the caller must roll back so the attempt is not counted).
    """
    # Lock order everywhere is model row → job row → audit head. Intake locks the model and then
    # joins a queued job; claiming the job first and the model second would deadlock with it.
    model_id = session.scalar(select(Job.model_id).where(Job.id == job_id))
    if model_id is None:
        return ClaimOutcome.NOT_CLAIMABLE
    session.execute(select(Model.id).where(Model.id == model_id).with_for_update())
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    res = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.status == "queued", and_(Job.status == "running", Job.lease_expires_at < db_time(now))),
            Job.attempts < Job.max_attempts,
        )
        .values(
            status="running",
            attempts=Job.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=expires,
            heartbeat_at=now,
            started_at=func.coalesce(Job.started_at, db_time(now)),
            stage="claimed",
            progress=0.0,
        )
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        return ClaimOutcome.NOT_CLAIMABLE
    job = session.scalars(select(Job).where(Job.id == job_id).execution_options(populate_existing=True)).one()
    locked = session.execute(
        update(Model)
        .where(
            Model.id == job.model_id,
            or_(
                Model.lock_job_id.is_(None),
                Model.lock_job_id == job_id,
                Model.lock_expires_at < db_time(now),
            ),
        )
        .values(lock_job_id=job_id, lock_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount != 1:
        return ClaimOutcome.MODEL_BUSY
    model = session.scalars(
        select(Model).where(Model.id == job.model_id).execution_options(populate_existing=True)
    ).one()
    if model.latest_version is None:  # intake refuses models without a version; be explicit anyway
        return ClaimOutcome.NOT_CLAIMABLE
    # A job always starts from the newest version: no job forks from data another job removed.
    job.base_version = model.latest_version
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status == "queued")
        .values(status="running", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    append_event(
        session,
        actor=f"worker:{worker_id}",
        action="job.started",
        tenant_id=job.tenant_id,
        model=model.name,
        object_id=job_id,
        payload={"attempt": job.attempts, "base_version": model.latest_version, "worker": worker_id},
    )
    session.flush()
    return Claim(
        job_id=job_id,
        model_id=model.id,
        tenant_id=job.tenant_id,
        model_name=model.name,
        base_version=model.latest_version,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        method=job.method,
        params=dict(job.params or {}),
        policy=dict(job.policy or {}),
        seed=job.seed,
    )


def heartbeat(session: Session, job_id: str, model_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the job lease and the model lock; False if this worker no longer owns the job."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running")
        .values(lease_expires_at=expires, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        return False
    lock = session.execute(
        update(Model)
        .where(Model.id == model_id, Model.lock_job_id == job_id)
        .values(lock_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    return lock.rowcount == 1


def release_model_lock(session: Session, model_id: str, job_id: str) -> None:
    session.execute(
        update(Model)
        .where(Model.id == model_id, Model.lock_job_id == job_id)
        .values(lock_job_id=None, lock_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def enqueue_next_job(session: Session, model_id: str, exclude: str | None = None) -> int | None:
    """An outbox row for the model's oldest queued job (it may have waited for the model lock)."""
    stmt = select(Job.id).where(Job.model_id == model_id, Job.status == "queued")
    if exclude is not None:
        stmt = stmt.where(Job.id != exclude)
    nxt = session.scalars(stmt.order_by(Job.created_at, Job.id).limit(1)).first()
    return enqueue_job(session, nxt).id if nxt else None


def request_ids_of(session: Session, job_id: str) -> list[str]:
    return list(
        session.scalars(
            select(DeletionRequest.id)
            .where(DeletionRequest.job_id == job_id)
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
        )
    )


def _job_and_model(session: Session, job_id: str) -> tuple[Job, Model]:
    """The job as the conditional UPDATE just left it, and its model.

    populate_existing: the UPDATE bypassed the identity map (synchronize_session=False), so a copy
    the session already holds would otherwise be returned stale.
    """
    job = session.scalars(select(Job).where(Job.id == job_id).execution_options(populate_existing=True)).one()
    model = session.get(Model, job.model_id)
    assert model is not None  # jobs.model_id is a foreign key
    return job, model


def end_job(
    session: Session,
    job_id: str,
    *,
    status: str,
    error: dict[str, Any] | None,
    actor: str,
    metrics: dict[str, Any] | None = None,
    worker_id: str | None = None,
    from_status: tuple[str, ...] = ("running",),
    only_if_lease_expired: bool = False,
) -> tuple[bool, list[int]]:
    """Move a job to failed/cancelled in the caller's transaction (fenced by worker_id if given).

    Its requests follow, the model lock is released, an audit event is appended and the model's
    next queued job is announced. Returns (whether this call made the transition, outbox ids).
    """
    assert status in ("failed", "cancelled")
    now = utcnow()
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(from_status))
    if worker_id is not None:
        stmt = stmt.where(Job.lease_owner == worker_id)
    if only_if_lease_expired:
        stmt = stmt.where(Job.lease_expires_at < db_time(now))
    values: dict[str, Any] = {
        "status": status,
        "error": json_safe(error),
        "finished_at": now,
        "stage": status,
    }
    if metrics is not None:
        values["metrics"] = json_safe(metrics)
    res = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        return False, []
    job, model = _job_and_model(session, job_id)
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status.not_in(TERMINAL_REQUEST))
        .values(
            status=REQUEST_STATUS_FOR_JOB[status], error=json_safe(error), finished_at=now, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    release_model_lock(session, job.model_id, job_id)
    append_event(
        session,
        actor=actor,
        action=f"job.{status}",
        tenant_id=job.tenant_id,
        model=model.name,
        object_id=job_id,
        payload={
            "error": json_safe(error),
            "attempts": job.attempts,
            "base_version": job.base_version,
            "deletion_requests": request_ids_of(session, job_id),
            "metrics": json_safe(metrics),
        },
    )
    outbox: list[int] = []
    nxt = enqueue_next_job(session, job.model_id, exclude=job_id)
    if nxt is not None:
        outbox.append(nxt)
    log.info("job_ended", job_id=job_id, status=status, error=error)
    return True, outbox


def requeue_job(
    session: Session,
    job_id: str,
    *,
    actor: str,
    reason: dict[str, Any],
    worker_id: str | None = None,
    only_if_lease_expired: bool = False,
) -> tuple[bool, list[int]]:
    """Put a running job back to queued (a crashed or failed attempt with attempts left)."""
    now = utcnow()
    stmt = update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts < Job.max_attempts)
    if worker_id is not None:
        stmt = stmt.where(Job.lease_owner == worker_id)
    if only_if_lease_expired:
        stmt = stmt.where(Job.lease_expires_at < db_time(now))
    res = session.execute(
        stmt.values(
            status="queued",
            lease_owner=None,
            lease_expires_at=None,
            stage="requeued",
            error=json_safe(reason),
        ).execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        return False, []
    job, model = _job_and_model(session, job_id)
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status == "running")
        .values(status="queued", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    release_model_lock(session, job.model_id, job_id)
    append_event(
        session,
        actor=actor,
        action="job.requeued",
        tenant_id=job.tenant_id,
        model=model.name,
        object_id=job_id,
        payload={"attempts": job.attempts, "reason": json_safe(reason)},
    )
    row = enqueue_job(session, job_id)
    log.warning("job_requeued", job_id=job_id, attempts=job.attempts, reason=reason)
    return True, [row.id]
