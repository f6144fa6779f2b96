"""Retrying a request by reference (a subject of the registered training set) that the acceptance
policy rejected: nothing was kept, the samples are read again from the dataset. In-process on
SQLite and PostgreSQL (the real runner, the embedded broker that nobody consumes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from tests.integration.test_retry import REJECTED_PARAMS, REJECTING_POLICY
from tests.jobs.test_erasure import N_TRAIN, Digits, _setup, digits  # noqa: F401  (fixture)
from tests.service_fixtures import ApiClient, AppPool, make_settings


@pytest.fixture
def api(tmp_path: Path, db_url: str, app_pool: AppPool) -> Iterator[ApiClient]:
    settings = make_settings(tmp_path, database_url=db_url, retired_checkpoint_grace_seconds=0.0)
    with app_pool.client(settings, tmp_path) as client:
        yield client


def test_a_rejected_request_by_reference_is_retried_from_the_training_set(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    _setup(api, digits, models=("a",))
    body: dict[str, Any] = {
        "subject": "user-7",
        "method": "ga",
        "params": REJECTED_PARAMS,
        "policy": REJECTING_POLICY,
    }
    r = api.post("/v1/models/a/deletion-requests", json=body)
    assert r.status_code == 202, r.text
    req = r.json()
    assert req["by_reference"] is True
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
    got = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert got["status"] == "failed" and got["outcome"] == "policy_rejected"
    # Nothing kept (the dataset holds the samples), and no deadline to retry.
    assert got["forget_set_purged"] is True and api.ctx.storage.keys("forget-sets") == []
    assert got["retryable"] is True and got["retry_until"] is None

    relaxed = {"method": "neggrad_plus", "policy": {"max_eval_accuracy_drop": 0.2}}
    r = api.post(f"/v1/deletion-requests/{req['id']}/retry", json=relaxed)
    assert r.status_code == 202, r.text
    retried = r.json()
    assert retried["status"] == "queued" and retried["forget_set_purged"] is False
    assert retried["method"] == "neggrad_plus" and retried["job_id"] != req["job_id"]
    assert api.post(f"/v1/deletion-requests/{req['id']}/retry", json=relaxed).status_code == 409

    assert run_job(api.ctx, retried["job_id"], "w1") == RunOutcome.SUCCEEDED
    done = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert done["status"] == "completed" and done["result_version"] == 2
    assert done["forget_set_purged"] is True and api.ctx.storage.keys("forget-sets") == []
    # The samples left the dataset with the published version, as for any request by reference.
    assert api.get("/v1/datasets/train/versions/2").json()["n_samples"] == N_TRAIN - 10
    assert api.get("/v1/audit/verify").json()["ok"] is True
