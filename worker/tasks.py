"""Celery tasks: a thin wrapper around ``service.jobs.runner.run_job``.

The task carries only the job id; everything else is read from the database at claim time, so a
stale, duplicated or replayed message can do no harm.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any

import structlog
from celery.signals import worker_process_init

from service.broker import CeleryPublisher
from service.context import ServiceContext, build_context
from service.jobs.runner import run_job as run_job_once
from service.jobs.states import RunOutcome
from service.settings import get_settings
from worker.celery_app import app

log = structlog.get_logger("worker.tasks")

# Seconds before a job whose model is busy (another job of it runs) is tried again. The finishing
# job also announces the model's next queued job, so this is only the safety net.
MODEL_BUSY_RETRY_SECONDS = 10
# A tenant at its share of the workers waits for one of its jobs to end: try again soon.
TENANT_BUSY_RETRY_SECONDS = 3

_ctx: ServiceContext | None = None
_ctx_lock = threading.Lock()


def context() -> ServiceContext:
    """One context (engine pool, storage) per worker process, built on first use."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            settings = get_settings()
            if settings.torch_threads:
                # Bound CPU use per worker (one worker per core, or a shared test machine).
                import torch

                torch.set_num_threads(settings.torch_threads)
            # Publish through this worker's own Celery app (its connection pool).
            _ctx = build_context(settings, publisher=CeleryPublisher(app))
        return _ctx


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections.
    global _ctx
    _ctx = None


def worker_identity() -> str:
    # Unique per run: the lease owner fences this run, not just this process.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@app.task(name="worker.tasks.run_job", bind=True, acks_late=True, max_retries=None)
def run_job(self: Any, job_id: str) -> str:
    outcome = run_job_once(context(), job_id, worker_identity())
    if outcome == RunOutcome.MODEL_BUSY:
        raise self.retry(countdown=MODEL_BUSY_RETRY_SECONDS)
    if outcome == RunOutcome.TENANT_BUSY:
        raise self.retry(countdown=TENANT_BUSY_RETRY_SECONDS)
    return str(outcome)
