"""The reconciler: repairs what crashes and lost messages leave behind.

The database is the source of truth; the broker is only a doorbell. ``reconcile_once``
* requeues running jobs whose lease expired (worker killed, machine lost) while attempts remain,
  and fails them when none remain;
* releases model locks whose holder stopped extending them;
* publishes outbox rows that were never published (broker down at commit time), and re-publishes
  those of jobs still queued long after publishing (the broker lost the message: Redis here keeps
  nothing on disk); rows of jobs that moved on are deleted;
* purges stored forget sets of finished requests once their retention period has passed, and
  those kept for a retry of a request the acceptance policy rejected once its window has
  (``failed_forget_set_retention_seconds``; audited as ``deletion.retry_window_ended``);
* deletes the blobs of reference sets an erasure retired whose after-commit delete did not happen
  (service/references/retirement.py);
* sends due webhook deliveries (service/webhooks/delivery.py).
Every step is idempotent and safe to run from several processes at once.

It runs in a thread of the API (``start_reconciler_thread``) and as ``unlearn-service reconcile``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import select, update

from service.broker import TOPIC_JOB_RUN
from service.context import ServiceContext
from service.db import db_time, session_scope, utcnow
from service.jobs import lifecycle
from service.jobs.errors import JobError
from service.jobs.exactness import schedule_due
from service.jobs.states import JobStatus
from service.jobs.training_data import purge_replaced_data
from service.outbox import publish_rows, unpublished_ids
from service.references.retirement import purge_retired_sets
from service.registry.retirement import delete_expired_blobs
from service.tables import Job, Model, OutboxMessage
from service.webhooks.delivery import deliver_due

log = structlog.get_logger("service.reconciler")

ACTOR = "system:reconciler"


def _expired_leases(ctx: ServiceContext) -> dict[str, int]:
    stats = {"requeued": 0, "failed_expired": 0}
    now = utcnow()
    with session_scope(ctx.session_factory) as s:
        ids = list(
            s.scalars(
                select(Job.id)
                .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < db_time(now))
                .limit(500)
            )
        )
    detail = "the worker stopped renewing its lease (crashed or lost)"
    for job_id in ids:
        # One transaction per job; its outbox row and purge run after it commits.
        with session_scope(ctx.session_factory) as s:
            if lifecycle.requeue_job(
                s, job_id, actor=ACTOR, reason=JobError("LeaseExpired", detail), only_if_lease_expired=True
            ):
                stats["requeued"] += 1
            # Out of attempts (requeue requires attempts < max_attempts): the job fails.
            elif lifecycle.end_job(
                s,
                job_id,
                status=JobStatus.FAILED,
                error=JobError("LeaseExpired", detail + "; no attempts left"),
                actor=ACTOR,
                only_if_lease_expired=True,
            ):
                stats["failed_expired"] += 1
    return stats


def _expired_locks(ctx: ServiceContext) -> int:
    now = utcnow()
    with session_scope(ctx.session_factory) as s:
        res = s.execute(
            update(Model)
            .where(Model.lock_job_id.is_not(None), Model.lock_expires_at < db_time(now))
            .values(lock_job_id=None, lock_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        return lifecycle.rowcount(res)


def _stale_outbox(ctx: ServiceContext) -> tuple[int, int]:
    """Re-publish messages of jobs still queued long after publishing; drop rows of jobs that moved on."""
    stale_before = utcnow() - timedelta(seconds=ctx.settings.reconcile_stale_outbox_seconds)
    republish: list[int] = []
    dropped = 0
    with session_scope(ctx.session_factory) as s:
        rows = list(
            s.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.published_at.is_not(None),
                    OutboxMessage.published_at < db_time(stale_before),
                )
                .order_by(OutboxMessage.id)
                .limit(500)
            )
        )
        seen: set[str] = set()
        for row in rows:
            job_id = row.payload.get("job_id") if row.topic == TOPIC_JOB_RUN else None
            job = s.get(Job, job_id) if job_id else None
            if job is None or job_id is None or job.status != JobStatus.QUEUED or job_id in seen:
                s.delete(row)
                dropped += 1
                continue
            seen.add(job_id)
            model = s.get(Model, job.model_id)
            busy = model is not None and model.lock_job_id is not None and model.lock_job_id != job_id
            if busy:
                # The running job announces the model's next queued job when it ends.
                continue
            republish.append(row.id)
    sent = publish_rows(ctx.session_factory, ctx.publisher, republish) if republish else 0
    return sent, dropped


def reconcile_once(ctx: ServiceContext) -> dict[str, int]:
    stats = _expired_leases(ctx)
    stats["locks_released"] = _expired_locks(ctx)
    with session_scope(ctx.session_factory) as s:
        pending = unpublished_ids(s)
    stats["published"] = publish_rows(ctx.session_factory, ctx.publisher, pending) if pending else 0
    stats["republished"], stats["outbox_dropped"] = _stale_outbox(ctx)
    stats["forget_sets_purged"] = ctx.purge_forget_sets()
    grace = ctx.settings.retired_checkpoint_grace_seconds
    stats["retired_blobs_deleted"] = delete_expired_blobs(ctx.session_factory, ctx.storage, grace, grace)
    stats["dataset_versions_purged"] = purge_replaced_data(ctx, ctx.settings.erased_data_grace_seconds)
    # Reference sets an erasure retired whose after-commit delete did not happen.
    stats["reference_sets_purged"] = purge_retired_sets(ctx)
    stats["exact_retrains_queued"] = schedule_due(ctx)
    stats.update(deliver_due(ctx))  # webhook deliveries due (new, or retries whose backoff ended)
    if any(v for k, v in stats.items() if k != "outbox_dropped"):
        log.info("reconciled", **stats)
    return stats


def start_reconciler_thread(ctx: ServiceContext) -> Callable[[], None]:
    """Run ``reconcile_once`` every ``settings.reconcile_interval_seconds`` in a daemon thread.

    Returns a callable that stops the thread (and waits for the current pass to finish).
    """
    stop = threading.Event()
    interval = max(0.2, float(ctx.settings.reconcile_interval_seconds))

    def loop() -> None:
        while not stop.wait(interval):
            try:
                reconcile_once(ctx)
            except Exception as exc:  # never let one bad pass end the loop
                # Not even a broken log sink: the loop is the service's safety net.
                with contextlib.suppress(Exception):
                    log.warning("reconcile_failed", error=repr(exc))

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()

    def stop_thread() -> None:
        stop.set()
        thread.join(timeout=30)

    return stop_thread
