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

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.db import db_time, utcnow
from service.jobs.errors import JobError, ModelBusy, NotClaimable, PolicyRejected
from service.jobs.fairness import check_fair_share
from service.jobs.policy import AcceptancePolicy
from service.jobs.states import (
    REQUEST_STATUS_FOR_JOB,
    TERMINAL_REQUEST,
    JobKind,
    JobStatus,
    RequestOutcome,
    RequestStatus,
)
from service.json_safe import json_safe
from service.outbox import enqueue_job
from service.tables import DeletionRequest, Job, Model
from service.unit_of_work import purge_after_commit

log = structlog.get_logger("service.jobs")


@dataclass(frozen=True)
class Claim:
    job_id: str
    model_id: str
    tenant_id: str
    model_name: str
    base_version: int | None  # None: a training job on a model with no version yet
    attempt: int
    max_attempts: int
    method: str
    params: dict[str, Any]
    policy: AcceptancePolicy
    seed: int
    kind: JobKind = JobKind.UNLEARN
    dataset_version_id: str | None = None
    reason: str | None = None


def claim(
    session: Session, job_id: str, worker_id: str, lease_seconds: float, max_running_per_tenant: int = 1 << 30
) -> Claim:
    """Claim the job and the model lock in the caller's transaction.

    Raises NotClaimable (finished, taken by a live worker, out of attempts, or unknown: a
    duplicate delivery does nothing), ModelBusy (another job of the model runs) or TenantBusy
    (service.jobs.fairness); after either of the last two the caller's transaction must roll back
    so the attempt is not counted.
    """
    # Lock order everywhere is model row → job row → audit head. Intake locks the model and then
    # joins a queued job; claiming the job first and the model second would deadlock with it.
    row = session.execute(
        select(Job.model_id, Job.tenant_id, Job.status).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        raise NotClaimable(f"no job {job_id}")
    session.execute(select(Model.id).where(Model.id == row.model_id).with_for_update())
    if row.status == JobStatus.QUEUED:
        check_fair_share(session, row.tenant_id, max_running_per_tenant)
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    res = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < db_time(now)),
            ),
            Job.attempts < Job.max_attempts,
        )
        .values(
            status=JobStatus.RUNNING,
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
    if rowcount(res) != 1:
        raise NotClaimable(f"job {job_id} is finished, held by a live worker or out of attempts")
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
    if rowcount(locked) != 1:
        raise ModelBusy(f"another job of model {job.model_id} runs")
    model = session.scalars(
        select(Model).where(Model.id == job.model_id).execution_options(populate_existing=True)
    ).one()
    if model.latest_version is None and job.kind != JobKind.TRAIN:
        # Intake refuses models without a version; only a training job can make the first one.
        raise NotClaimable(f"model {model.name} has no version")
    # A job always starts from the newest version: no job forks from data another job removed.
    job.base_version = model.latest_version
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status == RequestStatus.QUEUED)
        .values(status=RequestStatus.RUNNING, updated_at=now)
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
        policy=AcceptancePolicy.model_validate(job.policy or {}),
        seed=job.seed,
        kind=JobKind(job.kind),
        dataset_version_id=job.dataset_version_id,
        reason=job.reason,
    )


def heartbeat(session: Session, job_id: str, model_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the job lease and the model lock; False if this worker no longer owns the job."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=expires, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(res) != 1:
        return False
    lock = session.execute(
        update(Model)
        .where(Model.id == model_id, Model.lock_job_id == job_id)
        .values(lock_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    return rowcount(lock) == 1


def release_model_lock(session: Session, model_id: str, job_id: str) -> None:
    session.execute(
        update(Model)
        .where(Model.id == model_id, Model.lock_job_id == job_id)
        .values(lock_job_id=None, lock_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def enqueue_next_job(session: Session, model_id: str, exclude: str | None = None) -> None:
    """Announce the model's oldest queued job (it may have waited for the model lock)."""
    stmt = select(Job.id).where(Job.model_id == model_id, Job.status == JobStatus.QUEUED)
    if exclude is not None:
        stmt = stmt.where(Job.id != exclude)
    nxt = session.scalars(stmt.order_by(Job.created_at, Job.id).limit(1)).first()
    if nxt:
        enqueue_job(session, nxt)


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
    status: JobStatus,
    error: JobError,
    actor: str,
    metrics: dict[str, Any] | None = None,
    worker_id: str | None = None,
    from_status: JobStatus = JobStatus.RUNNING,
    only_if_lease_expired: bool = False,
) -> bool:
    """Move a job to failed/cancelled in the caller's transaction (fenced by worker_id if given).

    Its requests follow, the model lock is released, an audit event is appended, and after commit
    the model's next queued job is announced and the job's forget sets are purged. A job the
    acceptance policy rejected leaves its requests retryable (outcome ``policy_rejected``): the
    purge then keeps their uploaded forget sets for the retry window (service/deletions/purge.py).
    Returns whether this call made the transition.
    """
    assert status in (JobStatus.FAILED, JobStatus.CANCELLED)
    now = utcnow()
    stmt = update(Job).where(Job.id == job_id, Job.status == from_status)
    if worker_id is not None:
        stmt = stmt.where(Job.lease_owner == worker_id)
    if only_if_lease_expired:
        stmt = stmt.where(Job.lease_expires_at < db_time(now))
    values: dict[str, Any] = {
        "status": status,
        "error": json_safe(error.to_dict()),
        "finished_at": now,
        "stage": str(status),
    }
    if metrics is not None:
        values["metrics"] = json_safe(metrics)
    res = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    if rowcount(res) != 1:
        return False
    job, model = _job_and_model(session, job_id)
    # Only a verdict of the policy is worth retrying with other params or policy as they are; a
    # crash, a bad checkpoint or a cancel is not, and its requests end as before.
    rejected = status == JobStatus.FAILED and error.type == PolicyRejected.__name__
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status.not_in(TERMINAL_REQUEST))
        .values(
            status=REQUEST_STATUS_FOR_JOB[status],
            outcome=RequestOutcome.POLICY_REJECTED if rejected else None,
            error=json_safe(error.to_dict()),
            finished_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    release_model_lock(session, job.model_id, job_id)
    request_ids = request_ids_of(session, job_id)
    retryable: dict[str, Any] = {}
    if rejected:
        uploaded = session.scalars(
            select(DeletionRequest.id).where(
                DeletionRequest.job_id == job_id, DeletionRequest.dataset_id.is_(None)
            )
        ).all()
        # The sets kept for a retry (until the retention passes); by reference, nothing is kept.
        retryable = {"outcome": str(RequestOutcome.POLICY_REJECTED), "forget_sets_kept_for": list(uploaded)}
    append_event(
        session,
        actor=actor,
        action=f"job.{status}",
        tenant_id=job.tenant_id,
        model=model.name,
        object_id=job_id,
        payload={
            "error": json_safe(error.to_dict()),
            "attempts": job.attempts,
            "base_version": job.base_version,
            "deletion_requests": request_ids,
            "metrics": json_safe(metrics),
            **retryable,
        },
    )
    enqueue_next_job(session, job.model_id, exclude=job_id)
    purge_after_commit(session, request_ids)
    log.info("job_ended", job_id=job_id, status=str(status), error=error.to_dict())
    return True


def requeue_job(
    session: Session,
    job_id: str,
    *,
    actor: str,
    reason: JobError,
    worker_id: str | None = None,
    only_if_lease_expired: bool = False,
) -> bool:
    """Put a running job back to queued (a crashed or failed attempt with attempts left)."""
    now = utcnow()
    stmt = update(Job).where(
        Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts < Job.max_attempts
    )
    if worker_id is not None:
        stmt = stmt.where(Job.lease_owner == worker_id)
    if only_if_lease_expired:
        stmt = stmt.where(Job.lease_expires_at < db_time(now))
    res = session.execute(
        stmt.values(
            status=JobStatus.QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            stage="requeued",
            error=json_safe(reason.to_dict()),
        ).execution_options(synchronize_session=False)
    )
    if rowcount(res) != 1:
        return False
    job, model = _job_and_model(session, job_id)
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == job_id, DeletionRequest.status == RequestStatus.RUNNING)
        .values(status=RequestStatus.QUEUED, updated_at=now)
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
        payload={"attempts": job.attempts, "reason": json_safe(reason.to_dict())},
    )
    enqueue_job(session, job_id)
    log.warning("job_requeued", job_id=job_id, attempts=job.attempts, reason=reason.to_dict())
    return True


def rowcount(result: Any) -> int:
    # UPDATE results are CursorResults; the typed API returns the generic Result.
    return int(result.rowcount or 0)
