"""Transactional outbox: broker messages are rows written in the same transaction as the state
they announce, and published after commit.

So a job can never exist without a message that will eventually run it (a crash between commit
and publish leaves an unpublished row the reconciler sends), and a message never names a job that
was rolled back. Delivery is at least once; the worker's atomic claim makes duplicates harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import session_scope, utcnow
from service.settings import Settings
from service.tables import OutboxMessage

if TYPE_CHECKING:
    from celery import Celery

    from service.context import ServiceContext

log = structlog.get_logger("service.outbox")

TOPIC_JOB_RUN = "job.run"
RUN_JOB_TASK = "worker.tasks.run_job"


class Publisher(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Send one message; raise on failure (the row then stays unpublished)."""


class CeleryPublisher:
    """Publishes outbox rows as Celery tasks (by name: the API never imports the worker's tasks)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if topic != TOPIC_JOB_RUN:
            raise ValueError(f"unknown outbox topic {topic!r}")
        with self.app.producer_or_acquire() as producer:
            # Declare the queue on every publish, not once per connection: a broker that lost its
            # state (Redis restarted or flushed, no persistence) also lost the exchange→queue
            # binding, and a publish through a cached declaration would then vanish silently.
            queue = self.app.amqp.queues[self.app.conf.task_default_queue]
            queue.bind(producer.channel).declare()
            self.app.send_task(
                RUN_JOB_TASK,
                args=[payload["job_id"]],
                producer=producer,
                # Fail fast when the broker is down: the row stays unpublished; the reconciler retries.
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.5,
                },
            )


_publishers: dict[tuple[str, str], CeleryPublisher] = {}
_publishers_lock = threading.Lock()


def publisher_for(settings: Settings) -> CeleryPublisher:
    """One Celery client per broker (a Celery app holds a connection pool; build it once)."""
    ident = (settings.resolved_broker_url, str(settings.broker_dir))
    with _publishers_lock:
        pub = _publishers.get(ident)
        if pub is None:
            from worker.celery_app import make_celery

            pub = CeleryPublisher(make_celery(settings))
            _publishers[ident] = pub
        return pub


def add_message(session: Session, topic: str, payload: dict[str, Any]) -> OutboxMessage:
    """Write a message in the caller's transaction; returns the row (its id is set after flush)."""
    row = OutboxMessage(topic=topic, payload=payload)
    session.add(row)
    session.flush()
    return row


def enqueue_job(session: Session, job_id: str) -> OutboxMessage:
    return add_message(session, TOPIC_JOB_RUN, {"job_id": job_id})


def publish_rows(ctx: ServiceContext, publisher: Publisher, ids: Iterable[int]) -> int:
    """Publish the given rows (after their transaction committed); returns how many went out.

    A failure is recorded on the row and swallowed: the reconciler publishes it later.
    """
    sent = 0
    for row_id in ids:
        with session_scope(ctx.session_factory) as session:
            row = session.get(OutboxMessage, row_id)
            if row is None:
                continue
            topic, payload = row.topic, dict(row.payload)
        try:
            publisher.publish(topic, payload)
        except Exception as exc:  # the broker may be down; the row stays for the reconciler
            log.warning("outbox_publish_failed", outbox_id=row_id, topic=topic, error=repr(exc))
            with session_scope(ctx.session_factory) as session:
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row_id)
                    .values(attempts=OutboxMessage.attempts + 1, last_error=repr(exc)[:2000])
                )
            continue
        with session_scope(ctx.session_factory) as session:
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
