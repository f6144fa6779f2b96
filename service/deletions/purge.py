"""Purging stored forget sets once their requests have ended and the retention has passed.

Two retentions: ``forget_set_retention_seconds`` for every ended request (default 0), and
``failed_forget_set_retention_seconds`` for an uploaded forget set whose request failed the
acceptance policy (outcome ``policy_rejected``): it is kept that long so the caller can retry the
request without uploading it again (service/deletions/retry.py). A retry puts the request back on
the queue, so its set is then purged when it ends again; past the window the reconciler purges it
and says so in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.audit.logic import append_event
from service.db import db_time, session_scope, utcnow
from service.jobs.states import TERMINAL_REQUEST, RequestOutcome, RequestStatus
from service.storage import ArtifactStore
from service.tables import DeletionRequest, Model

log = structlog.get_logger("service.deletions")

ACTOR = "system:purge"


@dataclass(frozen=True)
class RetryWindow:
    """Whether a request may be retried now, and until when (None: no deadline, or not at all)."""

    retryable: bool
    until: datetime | None
    reason: str = ""  # why not, for the refusal


def retry_window(req: DeletionRequest, failed_retention_seconds: float, now: datetime) -> RetryWindow:
    """The retry rule: a request the acceptance policy rejected may be retried; one that uploaded
    its samples, while its forget set is kept (until its end + the retention); one by reference
    at any time (its samples are read again from the registered training set)."""
    if req.status != RequestStatus.FAILED or req.outcome != RequestOutcome.POLICY_REJECTED:
        return RetryWindow(False, None, "only a request that failed the acceptance policy can be retried")
    if req.dataset_id is not None:
        return RetryWindow(True, None)
    if req.forget_set_key is None or req.finished_at is None:
        return RetryWindow(False, None, "its forget set was purged: submit the request again")
    until = req.finished_at + timedelta(seconds=failed_retention_seconds)
    if now >= until:
        return RetryWindow(
            False, until, "its retry window ended and its forget set is purged: submit it again"
        )
    return RetryWindow(True, until)


def _not_kept(failed_retention_seconds: float, now: datetime) -> ColumnElement[bool]:
    """Rows whose forget set is not kept for a retry (rejected by the policy, uploaded, within the
    window). Every term is NULL-safe: ``outcome`` is NULL on most rows, and NOT (NULL) is NULL."""
    cutoff = db_time(now - timedelta(seconds=failed_retention_seconds))
    return or_(
        DeletionRequest.outcome.is_(None),
        DeletionRequest.outcome != RequestOutcome.POLICY_REJECTED,
        DeletionRequest.dataset_id.is_not(None),
        DeletionRequest.finished_at.is_(None),
        DeletionRequest.finished_at <= cutoff,
    )


def purge_forget_sets(
    sessions: sessionmaker[Session],
    storage: ArtifactStore,
    retention_seconds: float,
    request_ids: list[str] | None = None,
    failed_retention_seconds: float = 0.0,
) -> int:
    """Delete stored forget sets of finished requests once the retention period has passed.

    The row is marked first (forget_set_key null, purged_at), then the blob is deleted unless
    another request still references the same content-addressed blob. Returns blobs deleted.
    """
    retention = timedelta(seconds=retention_seconds)
    now = utcnow()
    with session_scope(sessions) as s:
        # Retention is in the query, so a pass never spends its batch on rows still within it.
        stmt = select(DeletionRequest).where(
            DeletionRequest.forget_set_key.is_not(None),
            DeletionRequest.status.in_(TERMINAL_REQUEST),
            or_(
                DeletionRequest.finished_at.is_(None),
                DeletionRequest.finished_at <= db_time(now - retention),
            ),
            _not_kept(failed_retention_seconds, now),
        )
        if request_ids is not None:
            stmt = stmt.where(DeletionRequest.id.in_(request_ids))
        # Locked (PostgreSQL): a retry of a rejected request (a conditional UPDATE that needs the
        # set still stored) either commits first, and the row no longer matches when the lock is
        # granted, or waits and finds the set gone. SQLite's write lock orders them anyway.
        rows = list(s.scalars(stmt.limit(1000).with_for_update()))
        keys = {r.forget_set_key for r in rows if r.forget_set_key}
        for r in rows:
            if r.outcome == RequestOutcome.POLICY_REJECTED and r.dataset_id is None:
                _audit_retention_ended(s, r, now)
            r.forget_set_key = None
            r.forget_set_purged_at = now
    deleted = 0
    for key in sorted(keys):
        if key_referenced(sessions, key):
            continue  # another request (pending, or within retention) holds the same bytes
        try:
            blob = storage.read_bytes(key)
        except FileNotFoundError:
            continue
        storage.delete(key)
        # An intake may have committed a reference to this blob between the check and the delete.
        if key_referenced(sessions, key):
            storage.put_bytes(blob, kind=key.split("/", 1)[0])
            continue
        deleted += 1
    if deleted:
        log.info("forget_sets_purged", count=deleted)
    return deleted


def _audit_retention_ended(s: Session, req: DeletionRequest, now: datetime) -> None:
    """A set kept for a retry is gone: the request can no longer be retried (410)."""
    model = s.get(Model, req.model_id)
    append_event(
        s,
        actor=ACTOR,
        action="deletion.retry_window_ended",
        tenant_id=req.tenant_id,
        model=model.name if model is not None else None,
        object_id=req.id,
        payload={
            "job_id": req.job_id,
            "finished_at": req.finished_at.isoformat() if req.finished_at else None,
            "forget_set_sha256": req.forget_set_sha256,
            "purged_at": now.isoformat(),
        },
    )


def key_referenced(sessions: sessionmaker[Session], key: str) -> bool:
    with session_scope(sessions) as s:
        return (
            s.scalars(
                select(DeletionRequest.id).where(DeletionRequest.forget_set_key == key).limit(1)
            ).first()
            is not None
        )
