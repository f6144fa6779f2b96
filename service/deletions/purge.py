"""Purging stored forget sets once their requests have ended and the retention has passed."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import db_time, session_scope, utcnow
from service.jobs.states import TERMINAL_REQUEST
from service.storage import ArtifactStore
from service.tables import DeletionRequest

log = structlog.get_logger("service.deletions")


def purge_forget_sets(
    sessions: sessionmaker[Session],
    storage: ArtifactStore,
    retention_seconds: float,
    request_ids: list[str] | None = None,
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
        )
        if request_ids is not None:
            stmt = stmt.where(DeletionRequest.id.in_(request_ids))
        rows = list(s.scalars(stmt.limit(1000)))
        keys = {r.forget_set_key for r in rows if r.forget_set_key}
        for r in rows:
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


def key_referenced(sessions: sessionmaker[Session], key: str) -> bool:
    with session_scope(sessions) as s:
        return (
            s.scalars(
                select(DeletionRequest.id).where(DeletionRequest.forget_set_key == key).limit(1)
            ).first()
            is not None
        )
