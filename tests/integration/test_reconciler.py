"""The reconciler against the real app and database: lost leases, a broker that is down."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.db import session_scope, utcnow
from service.reconciler import reconcile_once, start_reconciler_thread
from service.tables import Job, Model, OutboxMessage
from tests.integration.conftest import Digits, Stack

pytestmark = pytest.mark.timeout(120)


def test_background_thread_requeues_an_expired_lease(make_stack, digits: Digits) -> None:
    stack: Stack = make_stack()  # no worker: we play a worker that died mid-job
    stack.register_digits(digits)
    r = stack.submit("digits", samples=digits.samples(slice(0, 4)))
    job_id = r.json()["job_id"]
    ctx = stack.api.ctx
    with session_scope(ctx.session_factory) as s:
        model_id = s.scalar(select(Job.model_id).where(Job.id == job_id))
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                attempts=1,
                lease_owner="dead-worker",
                lease_expires_at=utcnow() - timedelta(seconds=5),
            )
        )
        s.execute(
            update(Model)
            .where(Model.id == model_id)
            .values(lock_job_id=job_id, lock_expires_at=utcnow() - timedelta(seconds=5))
        )
    fast = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"reconcile_interval_seconds": 0.2})
    )
    stop = start_reconciler_thread(fast)
    try:
        job = stack.wait_job(job_id, timeout=30, until=lambda j: j["status"] == "queued")
    finally:
        t0 = time.monotonic()
        stop()
        assert time.monotonic() - t0 < 10, "stop() returns promptly"
    assert job["attempts"] == 1 and job["error"]["type"] == "LeaseExpired"
    with session_scope(ctx.session_factory) as s:
        assert s.scalar(select(Model.lock_job_id).where(Model.id == model_id)) is None
    actions = [e["action"] for e in stack.api.get("/v1/audit").json()["items"]]
    assert "job.requeued" in actions
    # Out of attempts: the next expiry fails the job and its requests instead of requeueing it.
    with session_scope(ctx.session_factory) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                attempts=3,
                lease_owner="dead-again",
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    stats = reconcile_once(ctx)
    assert stats["failed_expired"] == 1, stats
    job = stack.api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    req = stack.api.get(f"/v1/deletion-requests/{r.json()['id']}").json()
    assert req["status"] == "failed" and req["forget_set_purged"] is True


def test_broker_down_at_intake(make_stack, digits: Digits) -> None:
    """A broker that is down does not fail intake: the outbox row waits for the reconciler."""
    stack: Stack = make_stack(broker_url="redis://127.0.0.1:1/0")
    stack.register_digits(digits)
    r = stack.submit("digits", samples=digits.samples(slice(0, 4)))
    assert r.status_code == 202, r.text
    with session_scope(stack.api.ctx.session_factory) as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.published_at is None and row.attempts == 1 and row.last_error
        assert row.payload == {"job_id": r.json()["job_id"]}
    stats = reconcile_once(stack.api.ctx)
    assert stats["published"] == 0
    with session_scope(stack.api.ctx.session_factory) as s:
        assert s.scalars(select(OutboxMessage)).one().attempts == 2
