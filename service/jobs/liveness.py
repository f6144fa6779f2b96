"""Heartbeat, progress and cancellation of one running job.

A thread extends the job lease and the model lock; a worker that loses its lease (the reconciler
requeued the job, another worker claimed it) sees ``lost`` set and stops at the engine's next
step. Progress writes are throttled and only land while this worker still runs the job.
"""

from __future__ import annotations

import threading
import time

import structlog
from sqlalchemy import select, update

from service.context import ServiceContext
from service.db import session_scope
from service.jobs import lifecycle
from service.jobs.lifecycle import Claim
from service.jobs.states import JobStatus
from service.tables import Job

log = structlog.get_logger("service.jobs.liveness")

# Progress is advisory: one write a second per stage is plenty for a progress bar.
PROGRESS_INTERVAL_SECONDS = 1.0
CANCEL_CHECK_INTERVAL_SECONDS = 0.5


class Liveness:
    """Heartbeat thread + throttled progress writes + cancellation checks for one run."""

    def __init__(self, ctx: ServiceContext, claim: Claim, worker_id: str) -> None:
        self.ctx = ctx
        self.claim = claim
        self.worker_id = worker_id
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self.over_budget = threading.Event()
        self._deadline = time.monotonic() + ctx.settings.job_time_budget_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.job_id}", daemon=True)
        self._last_progress = 0.0
        self._last_stage: str | None = None
        self._last_cancel_check = 0.0
        self.log = log.bind(job_id=claim.job_id, worker=worker_id)

    def __enter__(self) -> Liveness:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        interval = max(0.2, float(self.ctx.settings.job_heartbeat_seconds))
        while not self._stop.wait(interval):
            try:
                with session_scope(self.ctx.session_factory) as s:
                    alive = lifecycle.heartbeat(
                        s,
                        self.claim.job_id,
                        self.claim.model_id,
                        self.worker_id,
                        self.ctx.settings.job_lease_seconds,
                    )
                if not alive:
                    self.log.warning("lease_lost")
                    self.lost.set()
                    return
            except Exception as exc:  # a database blip: try again at the next beat
                self.log.warning("heartbeat_failed", error=repr(exc))

    def progress(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_progress < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_stage, self._last_progress = stage, now
        try:
            with session_scope(self.ctx.session_factory) as s:
                s.execute(
                    update(Job)
                    # Only while running: an ended job keeps its lease_owner, and a late write
                    # would overwrite the final stage ("failed", "cancelled") the job ended with.
                    .where(
                        Job.id == self.claim.job_id,
                        Job.lease_owner == self.worker_id,
                        Job.status == JobStatus.RUNNING,
                    )
                    .values(stage=stage, progress=max(0.0, min(1.0, float(fraction))))
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:  # progress is advisory; never fail a job over it
            self.log.warning("progress_write_failed", error=repr(exc))

    def should_cancel(self) -> bool:
        if self.lost.is_set() or self.cancelled.is_set() or self.over_budget.is_set():
            return True
        now = time.monotonic()
        if now >= self._deadline:
            self.over_budget.set()
            return True
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_SECONDS:
            self._last_cancel_check = now
            try:
                with session_scope(self.ctx.session_factory) as s:
                    row = s.execute(
                        select(Job.cancel_requested, Job.lease_owner, Job.status).where(
                            Job.id == self.claim.job_id
                        )
                    ).one()
                if row.cancel_requested:
                    self.cancelled.set()
                if row.lease_owner != self.worker_id or row.status != JobStatus.RUNNING:
                    self.lost.set()
            except Exception as exc:
                self.log.warning("cancel_check_failed", error=repr(exc))
        return self.lost.is_set() or self.cancelled.is_set()
