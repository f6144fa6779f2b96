"""The broker side of the service: the Celery client it publishes jobs with.

The API never imports the worker: it sends ``run_job`` by name. The worker builds its Celery app
with the same ``make_celery`` (so both agree on queue, serialisation and transport options) and
adds its task module. The database, not the broker, is the source of truth: results are ignored,
a lost message is re-sent by the reconciler, and a duplicate is a no-op at the worker's claim.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery

from service.settings import Settings

QUEUE = "unlearn"
RUN_JOB_TASK = "worker.tasks.run_job"
TOPIC_JOB_RUN = "job.run"


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.is_embedded_broker:
        # kombu's filesystem transport: producer and consumer share one folder (no server needed).
        messages = settings.broker_dir / "messages"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"  # kombu's default is ./control, in the cwd
        for folder in (messages, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "processed_folder": str(processed),
            "control_folder": str(control),
            "polling_interval": settings.embedded_broker_polling_seconds,
            "store_processed": False,
        }
    if settings.resolved_broker_url.startswith(("redis://", "rediss://")):
        # With acks_late an unacked message is redelivered after the visibility timeout; make it
        # longer than the hard time limit so a running job is not delivered twice while healthy.
        return {"visibility_timeout": settings.job_time_limit + 300}
    return {}


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    app = Celery("unlearn", broker=settings.resolved_broker_url, include=list(include))
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Jobs run for minutes; a worker must not hold a second job it cannot start.
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_disable_rate_limits=True,
        enable_utc=True,
    )
    return app


class CeleryPublisher:
    """Publishes outbox messages as Celery tasks, by task name."""

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
            pub = CeleryPublisher(make_celery(settings))
            _publishers[ident] = pub
        return pub
