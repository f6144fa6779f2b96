"""Webhooks through real processes: a Celery worker process runs the job, and so writes the
deliveries of job.started / job.succeeded / version.created / deletion.completed in its own
transactions; the API's delivery thread (not a test calling reconcile_once) finds them by polling
and sends them, signed, to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import DIGITS_ARCH, Digits, Stack
from tests.service.test_webhooks import Receiver, deliveries, receiver_verifies, register

EVENTS = ["deletion.requested", "job.started", "job.succeeded", "version.created", "deletion.completed"]


def _check(stack: Stack, digits: Digits, receiver: Receiver) -> None:
    api = stack.api
    api.create_model("digits", DIGITS_ARCH)
    hook = register(api, receiver.url("/unlearn"), EVENTS, model="digits")
    assert api.upload_version("digits", digits.checkpoint, digits.eval_set).status_code == 201
    stack.start_worker("hooks").wait_ready()
    r = stack.submit("digits", file=digits.forget_file(slice(0, 10)))
    assert r.status_code == 202, r.text
    request: dict[str, Any] = r.json()
    job = stack.wait_job(request["job_id"])
    assert job["status"] == "succeeded", job

    got = receiver.wait_for(6, timeout=60)
    assert [g.json()["type"] for g in got] == [
        "version.created",
        "deletion.requested",
        "job.started",
        "job.succeeded",
        "version.created",
        "deletion.completed",
    ]
    assert all(receiver_verifies(hook["secret"], g.headers, g.body) for g in got)
    assert len({g.headers["webhook-id"] for g in got}) == 6
    done = got[-1].json()["data"]
    assert done["deletion_request_id"] == request["id"] and done["result_version"] == job["result_version"]
    listed = deliveries(api, hook["id"])
    assert len(listed) == 6 and {d["status"] for d in listed} == {"delivered"}


@pytest.fixture
def receiver() -> Any:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.close()


def _settings() -> dict[str, Any]:
    return {
        "webhook_allowed_hosts": ["127.0.0.1"],
        "run_reconciler_in_api": True,  # and with it the delivery thread
        "reconcile_interval_seconds": 2.0,
        "webhook_poll_seconds": 0.3,
    }


@pytest.mark.postgres
@pytest.mark.redis
def test_webhooks_from_a_worker_process_postgres_redis(
    postgres_url: str, redis_url: str, make_stack: Any, digits: Digits, receiver: Receiver
) -> None:
    # make_stack after the servers' fixtures: the API (and its delivery thread) stops before the
    # database is dropped.
    stack = make_stack(database_url=postgres_url, broker_url=redis_url, **_settings())
    _check(stack, digits, receiver)


def test_webhooks_from_a_worker_process_embedded(make_stack: Any, digits: Digits, receiver: Receiver) -> None:
    stack = make_stack(**_settings())
    _check(stack, digits, receiver)
