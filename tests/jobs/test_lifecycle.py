"""The job lifecycle in-process: intake → run → publish, and its races, with a fake publisher.

No broker and no worker process: the API's context gets a publisher that records messages, and
the tests call the job runner directly, so every interleaving is chosen, not hoped for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from service.db import session_scope, utcnow
from service.jobs import lifecycle
from service.jobs.errors import JobError, ModelBusy, NotClaimable
from service.jobs.runner import run_job
from service.jobs.states import JobStatus, RunOutcome
from service.outbox import enqueue_job
from service.reconciler import reconcile_once
from service.tables import DeletionRequest, Job, OutboxMessage
from tests.jobs.helpers import FakePublisher, job_row, register_model, submit
from tests.service_fixtures import ApiClient, make_settings, start_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    client = start_api(make_settings(tmp_path, job_lease_seconds=30))
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def publisher(api: ApiClient) -> FakePublisher:
    fake = FakePublisher()
    api.ctx.publisher = fake
    return fake


def test_intake_publishes_after_commit_and_the_run_publishes_a_version(
    api: ApiClient, publisher: FakePublisher
) -> None:
    model = register_model(api)
    req = submit(api, model)
    assert publisher.job_ids() == [req["job_id"]]  # published once the intake committed

    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.SUCCEEDED
    job = job_row(api, req["job_id"])
    assert job.status == JobStatus.SUCCEEDED and job.result_version == 2
    assert job.metrics is not None and job.metrics["policy"]["accepted"] is True
    r = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert r["status"] == "completed" and r["result_version"] == 2
    assert r["forget_set_purged"] is True  # the purge ran after the success transaction committed
    # A second delivery of the same message does nothing.
    assert run_job(api.ctx, req["job_id"], "w2") == RunOutcome.NOT_CLAIMABLE


def test_a_rolled_back_transaction_publishes_nothing(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    req = submit(api, model)
    publisher.sent.clear()
    with pytest.raises(RuntimeError), session_scope(api.ctx.session_factory) as s:
        enqueue_job(s, req["job_id"])
        raise RuntimeError("the transaction fails after recording its effect")
    assert publisher.sent == []
    with session_scope(api.ctx.session_factory) as s:
        assert s.scalars(select(OutboxMessage).where(OutboxMessage.published_at.is_(None))).all() == []


def test_a_failed_publish_leaves_the_row_for_the_reconciler(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    publisher.fail = True
    req = submit(api, model)  # the intake still answers 202: the row is durable
    assert publisher.sent == []
    publisher.fail = False
    assert reconcile_once(api.ctx)["published"] == 1
    assert publisher.job_ids() == [req["job_id"]]


def test_claim_raises_named_errors(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    first = submit(api, model)
    # A second job of the same model (other params do not batch with the first).
    second = submit(api, model, seed=3, params='{"epochs": 3}')
    assert first["job_id"] != second["job_id"]
    with session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, first["job_id"], "w1", 30)
    with pytest.raises(ModelBusy), session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, second["job_id"], "w2", 30)
    assert job_row(api, second["job_id"]).attempts == 0  # the busy attempt rolled back
    assert run_job(api.ctx, second["job_id"], "w2") == RunOutcome.MODEL_BUSY
    with pytest.raises(NotClaimable), session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, "job_missing", "w1", 30)


def test_ending_a_job_announces_the_next_one(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    first = submit(api, model)
    second = submit(api, model, seed=3, params='{"epochs": 3}')
    publisher.sent.clear()
    assert run_job(api.ctx, first["job_id"], "w1") == RunOutcome.SUCCEEDED
    assert publisher.job_ids() == [second["job_id"]]
    assert run_job(api.ctx, second["job_id"], "w1") == RunOutcome.SUCCEEDED
    assert job_row(api, second["job_id"]).base_version == 2  # it started from the newest version


def test_a_worker_that_lost_its_lease_cannot_end_the_job(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    req = submit(api, model)
    with session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, req["job_id"], "w1", 30)
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with session_scope(api.ctx.session_factory) as s:
        claim = lifecycle.claim(s, req["job_id"], "w2", 30)  # the lease expired: w2 takes over
    assert claim.attempt == 2
    with session_scope(api.ctx.session_factory) as s:
        ended = lifecycle.end_job(
            s, req["job_id"], status=JobStatus.FAILED, error=JobError("X", "late"), actor="w1", worker_id="w1"
        )
    assert ended is False
    assert job_row(api, req["job_id"]).lease_owner == "w2"


def test_unexpected_errors_requeue_then_fail(
    api: ApiClient, publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.jobs.runner as runner

    def broken(*_: Any) -> Any:
        raise RuntimeError("storage unreachable")

    monkeypatch.setattr(runner, "load_inputs", broken)
    model = register_model(api)
    req = submit(api, model)
    publisher.sent.clear()
    max_attempts = job_row(api, req["job_id"]).max_attempts
    outcomes = [run_job(api.ctx, req["job_id"], f"w{i}") for i in range(max_attempts)]
    assert outcomes == [RunOutcome.REQUEUED] * (max_attempts - 1) + [RunOutcome.FAILED]
    assert publisher.job_ids() == [req["job_id"]] * (max_attempts - 1)  # each requeue re-announces
    job = job_row(api, req["job_id"])
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error["type"] == "RuntimeError" and job.error["attempt"] == max_attempts


def test_a_purged_forget_set_fails_the_job_without_retry(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    req = submit(api, model)
    with session_scope(api.ctx.session_factory) as s:
        s.execute(update(DeletionRequest).values(forget_set_key=None))
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
    job = job_row(api, req["job_id"])
    assert job.error is not None and job.error["type"] == "InvalidInputError" and job.attempts == 1


def test_cancelling_a_queued_job_ends_it_and_purges(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    req = submit(api, model)
    r = api.post(f"/v1/jobs/{req['job_id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    d = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert d["status"] == "cancelled" and d["forget_set_purged"] is True
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.NOT_CLAIMABLE
    assert api.post(f"/v1/jobs/{req['job_id']}/cancel").status_code == 409


def test_cancelling_a_running_job_stops_it_at_its_next_step(api: ApiClient, publisher: FakePublisher) -> None:
    model = register_model(api)
    req = submit(api, model)
    with session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, req["job_id"], "w1", 30)
    assert api.post(f"/v1/jobs/{req['job_id']}/cancel").json()["cancel_requested"] is True
    # Hand the job back as if w1 had died, so the runner below claims and then sees the request.
    with session_scope(api.ctx.session_factory) as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert run_job(api.ctx, req["job_id"], "w2") == RunOutcome.CANCELLED
    assert job_row(api, req["job_id"]).status == JobStatus.CANCELLED
