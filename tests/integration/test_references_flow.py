"""Reference models through the real stack: PostgreSQL, Redis and a Celery worker process build a
reference set as a job on the queue, and the next deletion job is tested per example against it
(the policy requiring the test). The data and model are tests/jobs/test_references.py's."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Stack
from tests.jobs.test_references import ARCH, N_TRAIN, RECIPE, _data, _subject, _train_npz

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.postgres
@pytest.mark.redis
def test_references_and_a_tested_deletion_on_postgres_redis_and_a_worker(
    make_stack, postgres_url: str, redis_url: str
) -> None:
    from safetensors.torch import save

    stack: Stack = make_stack(database_url=postgres_url, broker_url=redis_url, reference_models=3)
    stack.start_worker("ref")
    api, d = stack.api, _data()
    assert api.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201
    assert (
        api.post("/v1/datasets/train/versions", files={"data": ("t.npz", _train_npz(d))}).status_code == 201
    )
    api.create_model("m", ARCH)
    ev = save({"inputs": d["x"][N_TRAIN:].contiguous(), "labels": d["y"][N_TRAIN:].contiguous()})
    r = api.post(
        "/v1/models/m/versions",
        files={"checkpoint": ("m", d["checkpoint"]), "eval_set": ("e", ev)},
        data={"dataset": "train", "dataset_version": "1", "recipe": json.dumps(RECIPE)},
    )
    assert r.status_code == 201, r.text

    r = api.post("/v1/models/m/references", json={})  # k: the service's setting
    assert r.status_code == 202, r.text
    refs = stack.wait_job(r.json()["id"])
    assert refs["status"] == "succeeded", refs
    assert refs["metrics"]["k"] == 3 and len(refs["metrics"]["checkpoints"]) == 3

    files = {"forget_set": ("f.safetensors", _subject(d, "user-7"), "application/octet-stream")}
    policy = {"max_lira_tpr": 1.0}  # required, and met by any result: the test must have run
    r = api.post("/v1/models/m/deletion-requests", files=files, data={"policy": json.dumps(policy)})
    assert r.status_code == 202, r.text
    job = stack.wait_job(r.json()["job_id"])
    assert job["status"] == "succeeded", job
    lira = job["metrics"]["lira"]
    assert lira["references_job"] == refs["id"] and lira["n_references"] == 3
    # K = 3: every sample IN for one reference, OUT for two.
    assert lira["n_members"] == 10 and lira["n_forget_without_out_reference"] == 0
    assert lira["n_nonmembers"] == job["metrics"]["eval_split"]["n_check"]
    check = job["metrics"]["policy"]["checks"]["lira"]
    assert check["ok"] and check["tpr"] == lira["tpr_at_fpr"]["0.05"]

    # A subject erasure: the worker's job tests against the set, its publish retires the set, and
    # the worker deletes the set's checkpoints and membership blob after that commit.
    r = api.post("/v1/datasets/train/erasures", json={"subject": "user-3"})
    assert r.status_code == 202, r.text
    erasing = stack.wait_job(r.json()["deletion_requests"][0]["job_id"])
    assert erasing["status"] == "succeeded", erasing
    assert erasing["metrics"]["lira"]["references_job"] == refs["id"]
    assert erasing["metrics"]["references_retired"] == [refs["id"]]
    retired = stack.wait_job(
        refs["id"], until=lambda j: bool(j["metrics"].get("retired", {}).get("blobs_deleted_at"))
    )["metrics"]
    assert retired["retired"]["job_id"] == erasing["id"] and retired["retired"]["reason"] == "erasure"
    keys = [*retired["checkpoints"], retired["membership_key"]]
    assert not any(stack.api.ctx.storage.exists(k) for k in keys), "the erased samples' references remain"
    assert api.get("/v1/audit/verify").json()["ok"] is True

    # The model's next job finds no usable set and says so.
    r = api.post("/v1/models/m/deletion-requests", json={"subject": "user-1"})
    assert r.status_code == 202, r.text
    job = stack.wait_job(r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert "retired by an erasure" in job["metrics"]["lira"]["skipped"]
    assert job["metrics"]["lira"]["references_retired"]["job_id"] == erasing["id"]
