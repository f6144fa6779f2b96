"""Subject erasure end to end on real servers: a Celery worker process runs the jobs, on
PostgreSQL + Redis and on the embedded defaults (SQLite + the filesystem broker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.reconciler import reconcile_once
from service.tables import DatasetVersion
from tests.integration.conftest import Stack, backend_urls
from tests.jobs.test_erasure import N_TRAIN, Digits, _setup, digits  # noqa: F401  (fixture)


def _wait_erasure(stack: Stack, erasure_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        e = stack.api.get(f"/v1/erasures/{erasure_id}").json()
        if e["status"] in ("completed", "failed"):
            return e
        logs = "\n".join(w.log()[-2000:] for w in stack.workers)
        assert time.monotonic() < deadline, f"erasure not done: {e}\n{logs}"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend", ["postgres", "embedded"])
def test_subject_erasure_with_a_worker(
    make_stack: Callable[..., Stack],
    request: pytest.FixtureRequest,
    backend: str,
    digits: Digits,  # noqa: F811
) -> None:
    urls = backend_urls(request, backend)
    stack = make_stack(retired_checkpoint_grace_seconds=0.0, **urls)
    _setup(stack.api, digits)
    stack.start_worker("w")
    r = stack.api.post(
        "/v1/datasets/train/erasures", json={"subject": "user-7"}, headers={"Idempotency-Key": "k"}
    )
    assert r.status_code == 202, r.text
    erasure = _wait_erasure(stack, r.json()["id"])
    assert erasure["status"] == "completed", erasure
    assert {d["model"]: d["result_version"] for d in erasure["deletion_requests"]} == {"a": 2, "b": 2}
    assert erasure["result_dataset_version"] == 2
    assert stack.api.get("/v1/datasets/train/versions/2").json()["n_samples"] == N_TRAIN - 10
    for name in ("a", "b"):
        assert stack.api.get(f"/v1/models/{name}/versions/1/checkpoint").status_code == 410
        assert stack.api.get(f"/v1/models/{name}/versions/latest/checkpoint").status_code == 200
    # The grace period is 0 here: the reconciler deletes the old checkpoints and the data set
    # version that still held the subject's samples.
    before = set(stack.api.ctx.storage.keys("checkpoints"))
    stats = reconcile_once(stack.api.ctx)
    assert stats["retired_blobs_deleted"] == 2 and stats["dataset_versions_purged"] == 1, stats
    assert len(before - set(stack.api.ctx.storage.keys("checkpoints"))) == 2
    with session_scope(stack.api.ctx.session_factory) as s:
        assert s.scalars(select(DatasetVersion.status).where(DatasetVersion.version == 1)).one() == "purged"
    assert stack.api.get("/v1/audit/verify").json()["ok"] is True
    receipt = stack.api.get(f"/v1/erasures/{erasure['id']}/receipt").json()
    assert len(receipt["models"]) == 2 and receipt["training_data"]["after"]["version"] == 2
    # A replay of the erasure answers the same; a new one finds nothing left.
    replay = stack.api.post(
        "/v1/datasets/train/erasures", json={"subject": "user-7"}, headers={"Idempotency-Key": "k"}
    )
    assert replay.json()["id"] == erasure["id"]
    again = stack.api.post("/v1/datasets/train/erasures", json={"subject": "user-7"})
    assert again.status_code == 200 and again.json()["outcome"] == "already_erased"
