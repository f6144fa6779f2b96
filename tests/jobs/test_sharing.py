"""Sharing the workers between tenants: fair claims, per-tenant limits, budgets, param bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.db import session_scope
from service.jobs import lifecycle
from service.jobs.fairness import TenantBusy
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.tables import Job
from tests.jobs.helpers import FakePublisher, job_row, register_model, submit
from tests.service_fixtures import ApiClient, make_settings, start_api


def _api(tmp_path: Path, **settings: Any) -> ApiClient:
    client = start_api(make_settings(tmp_path, **settings))
    client.ctx.publisher = FakePublisher()
    return client


@pytest.fixture
def two_tenants(tmp_path: Path) -> Iterator[tuple[ApiClient, ApiClient]]:
    api = _api(tmp_path, tenant_max_running_jobs=2)
    try:
        other = api.with_key(api.new_key(["models:write", "models:read", "deletions:write"], tenant="b"))
        yield api, other
    finally:
        api.__exit__(None, None, None)


def test_a_tenant_with_a_running_job_yields_to_a_waiting_tenant(
    two_tenants: tuple[ApiClient, ApiClient],
) -> None:
    a, b = two_tenants
    a1 = submit(a, register_model(a, "a1"))
    a2 = submit(a, register_model(a, "a2"))
    b1 = submit(b, register_model(b, "b1"))
    with session_scope(a.ctx.session_factory) as s:
        lifecycle.claim(s, a1["job_id"], "w1", 30, 2)
    # Tenant a runs one job and b runs none: a's second job waits, b's job goes first.
    with pytest.raises(TenantBusy), session_scope(a.ctx.session_factory) as s:
        lifecycle.claim(s, a2["job_id"], "w2", 30, 2)
    assert run_job(a.ctx, a2["job_id"], "w2") == RunOutcome.TENANT_BUSY
    assert job_row(a, a2["job_id"]).attempts == 0
    assert run_job(a.ctx, b1["job_id"], "w2") == RunOutcome.SUCCEEDED
    # Nobody else waits now: a may use a second worker.
    assert run_job(a.ctx, a2["job_id"], "w2") == RunOutcome.SUCCEEDED


def test_a_tenant_never_runs_more_than_its_limit(tmp_path: Path) -> None:
    api = _api(tmp_path, tenant_max_running_jobs=1)
    try:
        j1 = submit(api, register_model(api, "m1"))
        j2 = submit(api, register_model(api, "m2"))
        with session_scope(api.ctx.session_factory) as s:
            lifecycle.claim(s, j1["job_id"], "w1", 30, 1)
        assert run_job(api.ctx, j2["job_id"], "w2") == RunOutcome.TENANT_BUSY
    finally:
        api.__exit__(None, None, None)


def test_a_job_past_its_time_budget_fails_and_frees_the_worker(tmp_path: Path) -> None:
    api = _api(tmp_path, job_time_budget_seconds=0.001)
    try:
        req = submit(api, register_model(api))
        assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
        job = job_row(api, req["job_id"])
        assert job.error is not None and job.error["type"] == "BudgetExceeded"
        with session_scope(api.ctx.session_factory) as s:
            assert s.get(Job, req["job_id"]) is not None
    finally:
        api.__exit__(None, None, None)


def test_params_beyond_the_operators_bounds_are_refused(tmp_path: Path) -> None:
    api = _api(tmp_path)
    try:
        model = register_model(api)
        files = {"forget_set": ("f.safetensors", b"x", "application/octet-stream")}
        r = api.post(
            f"/v1/models/{model}/deletion-requests",
            files=files,
            data={"params": '{"early_stop": null, "epochs": 100000}'},
        )
        assert r.status_code == 422 and "epochs" in r.json()["detail"], r.text
        with session_scope(api.ctx.session_factory) as s:
            assert s.query(Job).count() == 0
    finally:
        api.__exit__(None, None, None)


def test_a_tenants_backlog_is_bounded(tmp_path: Path) -> None:
    api = _api(tmp_path, tenant_max_queued_samples=10)
    try:
        model = register_model(api)
        submit(api, model)  # 8 samples
        files = {"forget_set": ("f.safetensors", _dataset(8), "application/octet-stream")}
        r = api.post(f"/v1/models/{model}/deletion-requests", files=files)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        with session_scope(api.ctx.session_factory) as s:
            assert s.query(Job).count() == 1
    finally:
        api.__exit__(None, None, None)


def _dataset(n: int) -> bytes:
    from tests.service_fixtures import make_dataset

    return make_dataset(n, seed=9)
