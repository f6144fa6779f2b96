"""Transactional outbox: broker messages are rows written in the same transaction as the state
they announce, and published after commit.

So a job can never exist without a message that will eventually run it (a crash between commit
and publish leaves an unpublished row the reconciler sends), and a message never names a job that
was rolled back. Delivery is at least once; the worker's atomic claim makes duplicates harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.broker import TOPIC_JOB_RUN
from service.db import session_scope, utcnow
from service.tables import OutboxMessage
from service.unit_of_work import publish_after_commit

log = structlog.get_logger("service.outbox")


class Publisher(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Send one message; raise on failure (the row then stays unpublished)."""


def add_message(session: Session, topic: str, payload: dict[str, Any]) -> OutboxMessage:
    """Write a message in the caller's transaction; returns the row (its id is set after flush)."""
    row = OutboxMessage(topic=topic, payload=payload)
    session.add(row)
    session.flush()
    return row


def enqueue_job(session: Session, job_id: str) -> OutboxMessage:
    """An outbox row that runs the job, published once this transaction commits."""
    row = add_message(session, TOPIC_JOB_RUN, {"job_id": job_id})
    publish_after_commit(session, row.id)
    return row


def publish_rows(sessions: sessionmaker[Session], publisher: Publisher, ids: Iterable[int]) -> int:
    """Publish the given rows (after their transaction committed); returns how many went out.

    A failure is recorded on the row and swallowed: the reconciler publishes it later.
    """
    sent = 0
    for row_id in ids:
        with session_scope(sessions) as session:
            row = session.get(OutboxMessage, row_id)
            if row is None:
                continue
            topic, payload = row.topic, dict(row.payload)
        try:
            publisher.publish(topic, payload)
        except Exception as exc:  # the broker may be down; the row stays for the reconciler
            log.warning("outbox_publish_failed", outbox_id=row_id, topic=topic, error=repr(exc))
            with session_scope(sessions) as session:
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row_id)
                    .values(attempts=OutboxMessage.attempts + 1, last_error=repr(exc)[:2000])
                )
            continue
        with session_scope(sessions) as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row_id)
                .values(published_at=utcnow(), attempts=OutboxMessage.attempts + 1, last_error=None)
            )
        sent += 1
        log.info("outbox_published", outbox_id=row_id, topic=topic, **payload)
    return sent


def unpublished_ids(session: Session, limit: int = 500) -> list[int]:
    return list(
        session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
    )
