"""Retrying a deletion request the acceptance policy rejected (POST /v1/deletion-requests/{id}/retry).

In-process on both backends (SQLite and PostgreSQL): the jobs are run by the test with the real
runner (``run_job``), the sweeper is the real reconciler pass, and the broker is the embedded one
(nobody consumes it). ``test_retry_with_a_worker`` runs the same story with a Celery worker
process, on PostgreSQL + Redis and on the embedded defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
import torch
from sqlalchemy import func, select

from service.db import session_scope
from service.jobs import lifecycle
from service.jobs.errors import JobError
from service.jobs.runner import run_job
from service.jobs.states import JobStatus, RunOutcome
from service.reconciler import reconcile_once
from service.tables import AuditEvent, DeletionRequest, Job
from tests.console.seed import _NO_OP_PARAMS as UTILITY_COLLAPSE
from tests.integration.conftest import DIGITS_ARCH, Digits, Stack, backend_urls, submit_deletion
from tests.service_fixtures import ApiClient

# One fixed ascent step far too large (and no utility guard): the model's eval accuracy collapses,
# so a policy that allows no drop at all rejects the job whatever the samples (forgetting is not
# asked for, so the verdict does not hang on noisy margins).
REJECTED_PARAMS = {**UTILITY_COLLAPSE, "max_eval_drop": 1.0}
REJECTING_POLICY = {"max_eval_accuracy_drop": 0.0, "require_forgetting": False}
# The retry: imu, whose utility guard stays within the relaxed budget.
RELAXED = {"method": "imu", "policy": {"max_eval_accuracy_drop": 0.2}}
DAY = 24 * 3600.0


def _register(api: ApiClient, digits: Digits, name: str = "digits") -> str:
    api.create_model(name, DIGITS_ARCH)
    r = api.upload_version(name, digits.checkpoint, digits.eval_set)
    assert r.status_code == 201, r.text
    return name


def _submit_rejected(api: ApiClient, digits: Digits, model: str = "digits") -> dict[str, Any]:
    idx = torch.nonzero(digits.y_train == 3).flatten()[:20]
    r = submit_deletion(
        api,
        model,
        file=digits.forget_file(idx),
        subject="user-3",
        method="ga",
        params=REJECTED_PARAMS,
        policy=REJECTING_POLICY,
    )
    assert r.status_code == 202, r.text
    return r.json()


def _get(api: ApiClient, request_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/deletion-requests/{request_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _n_jobs(api: ApiClient) -> int:
    with session_scope(api.ctx.session_factory) as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def _actions(api: ApiClient, object_id: str) -> list[str]:
    with session_scope(api.ctx.session_factory) as s:
        return list(
            s.scalars(
                select(AuditEvent.action).where(AuditEvent.object_id == object_id).order_by(AuditEvent.seq)
            )
        )


_STATE = ("status", "outcome", "job_id", "forget_set_key", "finished_at", "method", "params", "policy")


def _row(api: ApiClient, request_id: str) -> dict[str, Any]:
    """The columns a refusal must leave as they were."""
    with session_scope(api.ctx.session_factory) as s:
        r = s.get(DeletionRequest, request_id)
        assert r is not None
        return {
            k: getattr(r, k)
            for k in (
                "status",
                "outcome",
                "job_id",
                "forget_set_key",
                "finished_at",
                "method",
                "params",
                "policy",
            )
        }


def _forget_keys(api: ApiClient) -> list[str]:
    return list(api.ctx.storage.keys("forget-sets"))


def _rejected(api: ApiClient, digits: Digits) -> dict[str, Any]:
    """A request whose job the policy rejected, checked to keep its forget set."""
    _register(api, digits)
    req = _submit_rejected(api, digits)
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
    job = api.get(f"/v1/jobs/{req['job_id']}").json()
    assert job["error"]["type"] == "PolicyRejected", job
    assert job["metrics"]["policy"]["checks"]["eval_accuracy_drop"]["ok"] is False
    got = _get(api, req["id"])
    assert got["status"] == "failed" and got["outcome"] == "policy_rejected"
    assert got["retryable"] is True and got["forget_set_purged"] is False
    window = api.settings.failed_forget_set_retention_seconds
    assert _ts(got["retry_until"]) == _ts(got["finished_at"]) + timedelta(seconds=window)
    return got


def test_a_rejected_request_keeps_its_samples_and_a_retry_needs_no_upload(
    api: ApiClient, digits: Digits
) -> None:
    req = _rejected(api, digits)
    assert len(_forget_keys(api)) == 1  # the blob is still in storage
    before = _row(api, req["id"])
    other = api.with_key(api.new_key(["deletions:write"], tenant="other-tenant"))

    # Refusals change nothing: another tenant's request is not found; a bad override is a 422.
    r = other.post(f"/v1/deletion-requests/{req['id']}/retry")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert api.post("/v1/deletion-requests/del_missing/retry").status_code == 404
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json={"params": {"epochs": -1}})
    assert r.status_code == 422, r.text
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json={"policy": {"max_eval_accuracy_drop": 0.9}})
    assert r.status_code == 422, r.text  # over this service's limit, as at intake
    assert _row(api, req["id"]) == before and _n_jobs(api) == 1

    # The retry: 202 + Location, a new job, no upload; replayed with its key, it queues nothing more.
    headers = {"Idempotency-Key": "retry-1"}
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED, headers=headers)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/deletion-requests/{req['id']}"
    retried = r.json()
    assert retried["status"] == "queued" and retried["job_id"] != req["job_id"]
    assert retried["method"] == "imu" and retried["policy"]["max_eval_accuracy_drop"] == 0.2
    assert retried["outcome"] is None and retried["error"] is None and retried["retryable"] is False
    again = api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED, headers=headers)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == retried and _n_jobs(api) == 2
    assert api.post(f"/v1/deletion-requests/{req['id']}/retry", json={}, headers=headers).status_code == 422
    # Queued again: a second retry (another key) is a conflict, and changes nothing.
    queued = _row(api, req["id"])
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED)
    assert r.status_code == 409 and r.json()["request_status"] == "queued"
    assert _row(api, req["id"]) == queued and _n_jobs(api) == 2

    assert run_job(api.ctx, retried["job_id"], "w1") == RunOutcome.SUCCEEDED
    done = _get(api, req["id"])
    assert done["status"] == "completed" and done["result_version"] == 2
    assert done["forget_set_purged"] is True and _forget_keys(api) == []  # purged after the success
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry")
    assert r.status_code == 409 and r.json()["request_status"] == "completed"
    assert _actions(api, req["id"]) == ["deletion.requested", "deletion.retried"]
    retried_event = api.get("/v1/audit", params={"action": "deletion.retried"}).json()["items"][0]["payload"]
    assert retried_event["previous_job_id"] == req["job_id"] and retried_event["job_id"] == retried["job_id"]
    assert retried_event["changed"] == ["method", "policy"]
    failed = api.get("/v1/audit", params={"action": "job.failed"}).json()["items"][0]["payload"]
    assert failed["outcome"] == "policy_rejected" and failed["forget_sets_kept_for"] == [req["id"]]
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_concurrent_retries_queue_one_job(api: ApiClient, digits: Digits) -> None:
    req = _rejected(api, digits)
    url = f"/v1/deletion-requests/{req['id']}/retry"
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: api.post(url, json=RELAXED), range(4)))
    assert sorted(r.status_code for r in answers) == [202, 409, 409, 409], [r.text for r in answers]
    assert _n_jobs(api) == 2 and _actions(api, req["id"]).count("deletion.retried") == 1


@pytest.fixture
def short_window(tmp_path: Any, db_url: str, app_pool: Any) -> Any:
    from tests.service_fixtures import make_settings

    settings = make_settings(tmp_path, database_url=db_url, failed_forget_set_retention_seconds=3.0)
    with app_pool.client(settings, tmp_path) as client:
        yield client


def test_the_sweeper_purges_a_kept_forget_set_when_its_window_ends(
    short_window: ApiClient, digits: Digits
) -> None:
    api = short_window
    req = _rejected(api, digits)
    assert reconcile_once(api.ctx)["forget_sets_purged"] == 0  # within the window: kept
    assert len(_forget_keys(api)) == 1
    until = _ts(req["retry_until"])
    time.sleep(max(0.0, (until - datetime.now(until.tzinfo)).total_seconds()) + 0.1)
    # Past the window, before any sweep: 410, and nothing changes.
    before = _row(api, req["id"])
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED)
    assert r.status_code == 410 and r.json()["type"] == "urn:unlearn:problem:retry-window-ended", r.text
    assert _row(api, req["id"]) == before and _n_jobs(api) == 1 and len(_forget_keys(api)) == 1
    assert _get(api, req["id"])["retryable"] is False

    assert reconcile_once(api.ctx)["forget_sets_purged"] == 1
    got = _get(api, req["id"])
    assert got["forget_set_purged"] is True and got["status"] == "failed" and _forget_keys(api) == []
    assert _actions(api, req["id"])[-1] == "deletion.retry_window_ended"
    assert api.post(f"/v1/deletion-requests/{req['id']}/retry").status_code == 410
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_a_zero_window_purges_at_once(make_api: Callable[..., ApiClient], digits: Digits) -> None:
    api = make_api(failed_forget_set_retention_seconds=0.0)
    _register(api, digits)
    req = _submit_rejected(api, digits)
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
    got = _get(api, req["id"])
    assert got["outcome"] == "policy_rejected" and got["forget_set_purged"] is True
    assert got["retryable"] is False and _forget_keys(api) == []
    assert api.post(f"/v1/deletion-requests/{req['id']}/retry").status_code == 410


def test_other_failures_purge_and_are_not_retryable(api: ApiClient, digits: Digits) -> None:
    _register(api, digits)
    req = _submit_rejected(api, digits)
    # The worker died with no attempts left: the reconciler's way of failing a job.
    with session_scope(api.ctx.session_factory) as s:
        lifecycle.claim(s, req["job_id"], "w1", 30)
    with session_scope(api.ctx.session_factory) as s:
        assert lifecycle.end_job(
            s, req["job_id"], status=JobStatus.FAILED, error=JobError("LeaseExpired", "gone"), actor="test"
        )
    got = _get(api, req["id"])
    assert got["status"] == "failed" and got["outcome"] is None and got["retryable"] is False
    assert got["forget_set_purged"] is True and _forget_keys(api) == []
    before = _row(api, req["id"])
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry")
    assert r.status_code == 409 and r.json()["type"] == "urn:unlearn:problem:not-retryable", r.text
    assert _row(api, req["id"]) == before and _n_jobs(api) == 1

    cancelled = submit_deletion(api, "digits", samples=digits.samples([0, 1]), params={"epochs": 2})
    assert cancelled.status_code == 202, cancelled.text
    assert api.post(f"/v1/jobs/{cancelled.json()['job_id']}/cancel").status_code == 202
    r = api.post(f"/v1/deletion-requests/{cancelled.json()['id']}/retry")
    assert r.status_code == 409 and r.json()["request_status"] == "cancelled"


def _eventually(stack: Stack, request_id: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not until(got := _get(stack.api, request_id)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return got


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend", ["postgres", "embedded"])
def test_retry_with_a_worker(
    make_stack: Callable[..., Stack], request: pytest.FixtureRequest, backend: str, digits: Digits
) -> None:
    urls = backend_urls(request, backend)
    stack = make_stack(**urls)
    stack.register_digits(digits)
    stack.start_worker("w")
    req = _submit_rejected(stack.api, digits)
    job = stack.wait_job(req["job_id"])
    assert job["status"] == "failed" and job["error"]["type"] == "PolicyRejected", job
    got = _get(stack.api, req["id"])  # ended in the job's transaction
    assert got["outcome"] == "policy_rejected" and got["retryable"] is True
    assert got["forget_set_purged"] is False and len(stack.api.ctx.storage.keys("forget-sets")) == 1
    assert _ts(got["retry_until"]) == _ts(got["finished_at"]) + timedelta(seconds=DAY)

    headers = {"Idempotency-Key": f"retry-{backend}"}
    r = stack.api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED, headers=headers)
    assert r.status_code == 202, r.text
    replay = stack.api.post(f"/v1/deletion-requests/{req['id']}/retry", json=RELAXED, headers=headers)
    assert replay.status_code == 202 and replay.json()["job_id"] == r.json()["job_id"]
    job = stack.wait_job(r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["deletion_requests"] == [req["id"]]
    done = _eventually(stack, req["id"], lambda g: g["forget_set_purged"])  # purged after the commit
    assert done["status"] == "completed" and done["result_version"] == 2
    assert stack.api.ctx.storage.keys("forget-sets") == []
    assert len(stack.api.get("/v1/jobs?model=digits").json()["items"]) == 2  # the replay queued nothing
    assert stack.api.get("/v1/audit/verify").json()["ok"] is True
