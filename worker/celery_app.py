"""The Celery application, configured from the service settings.

``celery -A worker.celery_app worker`` uses the module-level ``app`` (settings from the
``UNLEARN_*`` environment). The API builds its own client with ``make_celery(settings)`` to
publish. The database, not the broker, is the source of truth: results are ignored, a lost
message is re-sent by the reconciler, and a duplicate is a no-op at the worker's atomic claim.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.settings import Settings, get_settings

QUEUE = "unlearn"


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


def make_celery(settings: Settings) -> Celery:
    app = Celery("unlearn", broker=settings.resolved_broker_url, include=["worker.tasks"])
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


app = make_celery(get_settings())
