"""Erasure by data subject, in-process: datasets, lineage, fan-out, retain-aware jobs, the data's
end of life, retirement, rollback, no-ops and receipts (fake publisher, jobs run by the test)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sqlalchemy import select

from service.db import session_scope
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.reconciler import reconcile_once
from service.tables import DatasetVersion, Job
from tests.jobs.helpers import FakePublisher
from tests.service_fixtures import ApiClient, make_settings, start_api
from unlearning import build_model, state_dict_bytes
from unlearning.training import train

ARCH = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}
N_TRAIN = 400
RECIPE = {"epochs": 150, "lr": 0.01, "batch_size": 64, "optimizer": "adam", "seed": 0}


_CHECKPOINTS: dict[int, bytes] = {}  # trained once per test session, by seed


@dataclass
class Digits:
    x: torch.Tensor
    y: torch.Tensor
    subjects: list[str]

    def train_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            inputs=self.x[:N_TRAIN].numpy(),
            labels=self.y[:N_TRAIN].numpy(),
            sample_ids=np.array([f"s{i}" for i in range(N_TRAIN)]),
            subject_ids=np.array(self.subjects[:N_TRAIN]),
        )
        return buf.getvalue()

    def eval_blob(self) -> bytes:
        from safetensors.torch import save

        return save({"inputs": self.x[N_TRAIN:].contiguous(), "labels": self.y[N_TRAIN:].contiguous()})

    def checkpoint(self, seed: int) -> bytes:
        if seed not in _CHECKPOINTS:
            _CHECKPOINTS[seed] = self._train(seed)
        return _CHECKPOINTS[seed]

    def _train(self, seed: int) -> bytes:
        torch.manual_seed(seed)
        model = build_model(ARCH)
        data = {"inputs": self.x[:N_TRAIN], "labels": self.y[:N_TRAIN]}
        train(model, data, epochs=RECIPE["epochs"], lr=0.01, batch_size=64, seed=seed, device="cpu")
        return state_dict_bytes(model)


@pytest.fixture(scope="module")
def digits() -> Digits:
    d = load_digits()
    x = torch.tensor(d.data[:600], dtype=torch.float32) / 16.0
    y = torch.tensor(d.target[:600], dtype=torch.int64)
    # 40 subjects of 10 samples each in the training set. The subjects the tests erase carry
    # labels of their own (shifted by one), which the model can only memorise: a model
    # retrained without them gets them wrong, so forgetting is visible (on samples the model
    # generalises to, a retrained model is as accurate as the original).
    subjects = [f"user-{i % 40}" for i in range(600)]
    own = torch.tensor([i < N_TRAIN and s in ("user-1", "user-3", "user-7") for i, s in enumerate(subjects)])
    y = torch.where(own, (y + 1) % 10, y)
    return Digits(x, y, subjects)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    client = start_api(make_settings(tmp_path, retired_checkpoint_grace_seconds=0.0))
    client.ctx.publisher = FakePublisher()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def _setup(api: ApiClient, digits: Digits, models: tuple[str, ...] = ("a", "b")) -> None:
    assert api.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201
    r = api.post("/v1/datasets/train/versions", files={"data": ("t.npz", digits.train_npz())})
    assert r.status_code == 201, r.text
    for i, name in enumerate(models):
        api.create_model(name, ARCH)
        r = api.post(
            f"/v1/models/{name}/versions",
            files={"checkpoint": ("m", digits.checkpoint(i)), "eval_set": ("e", digits.eval_blob())},
            data={"dataset": "train", "dataset_version": "1", "recipe": json.dumps(RECIPE)},
        )
        assert r.status_code == 201, r.text
        assert r.json()["training_data"] == {"dataset": "train", "version": 1}


def _run_all(api: ApiClient, job_ids: list[str]) -> list[RunOutcome]:
    return [run_job(api.ctx, j, "w1") for j in job_ids]


def test_subject_erasure_across_two_models(api: ApiClient, digits: Digits) -> None:
    _setup(api, digits)
    r = api.post("/v1/datasets/train/erasures", json={"subject": "user-7"}, headers={"Idempotency-Key": "e1"})
    assert r.status_code == 202, r.text
    erasure = r.json()
    assert erasure["n_samples"] == 10 and erasure["status"] == "queued"
    assert sorted(d["model"] for d in erasure["deletion_requests"]) == ["a", "b"]
    # A replay answers the same and fans out nothing more.
    again = api.post(
        "/v1/datasets/train/erasures", json={"subject": "user-7"}, headers={"Idempotency-Key": "e1"}
    )
    assert again.json() == erasure
    jobs = [d["job_id"] for d in erasure["deletion_requests"]]
    job = api.get(f"/v1/jobs/{jobs[0]}").json()
    assert job["method"] == "neggrad_plus", "the model's training data is registered: retain-aware default"
    outcomes = _run_all(api, jobs)
    assert outcomes == [RunOutcome.SUCCEEDED, RunOutcome.SUCCEEDED], [_debug(api, j)["error"] for j in jobs]

    done = api.get(f"/v1/erasures/{erasure['id']}").json()
    assert done["status"] == "completed" and done["result_dataset_version"] == 2
    # The dataset lost exactly those samples, in one new version both models link.
    v2 = api.get("/v1/datasets/train/versions/2").json()
    assert v2["n_samples"] == N_TRAIN - 10 and v2["erasure"]["erased_samples"] == 10
    for name in ("a", "b"):
        latest = api.get(f"/v1/models/{name}/versions/latest").json()
        assert latest["version"] == 2 and latest["training_data"] == {"dataset": "train", "version": 2}
        old = api.get(f"/v1/models/{name}/versions/1/checkpoint")
        assert old.status_code == 410 and old.headers["content-type"].startswith("application/problem+json")
        assert api.get(f"/v1/models/{name}/versions/1").json()["retired_reason"] == "erasure"
    # After the grace period (0 here) the old blobs and the old dataset version's shards are gone.
    stats = reconcile_once(api.ctx)
    assert stats["retired_blobs_deleted"] == 2 and stats["dataset_versions_purged"] == 1
    with session_scope(api.ctx.session_factory) as s:
        v1 = s.scalars(select(DatasetVersion).where(DatasetVersion.version == 1)).one()
        assert v1.status == "purged"
    assert api.get("/v1/audit/verify").json()["ok"] is True

    receipt = api.get(f"/v1/erasures/{erasure['id']}/receipt").json()
    assert (
        receipt["training_data"]["before"]["version"] == 1
        and receipt["training_data"]["after"]["version"] == 2
    )
    assert len(receipt["models"]) == 2
    for m in receipt["models"]:
        assert m["model_versions"]["before"]["version"] == 1 and m["model_versions"]["after"]["version"] == 2
        assert len(m["sample_digests"]) == 10 and m["method"] == "neggrad_plus" and m["policy"]["accepted"]
        assert m["exactness"]["stage"] == "approximate" and m["retired_versions"] == [1]
        assert {e["action"] for e in m["audit"]} >= {"deletion.requested", "job.succeeded"}
    signed = api.get(f"/v1/erasures/{erasure['id']}/receipt", params={"signed": "true"}).json()
    assert signed["signature"] and signed["document"]["type"] == "erasure-receipt"

    # Erasing the same subject again completes at once, as a no-op, and says so.
    r = api.post("/v1/datasets/train/erasures", json={"subject": "user-7"})
    assert r.status_code == 200 and r.json()["outcome"] == "already_erased", r.text


def test_requests_by_reference_and_retain_aware_methods(api: ApiClient, digits: Digits) -> None:
    _setup(api, digits, models=("a",))
    url = "/v1/models/a/deletion-requests"
    r = api.post(url, json={"sample_ids": ["s1", "s2", "s3"], "method": "neggrad_plus"})
    assert r.status_code == 202 and r.json()["by_reference"] is True, r.text
    assert run_job(api.ctx, r.json()["job_id"], "w1") == RunOutcome.SUCCEEDED
    # The same samples again: nothing left to forget.
    again = api.post(url, json={"sample_ids": ["s2", "s3"]})
    assert again.status_code == 200 and again.json()["outcome"] == "already_erased", again.text
    # Samples never in the training set, and an unknown subject: refused, nothing stored.
    assert api.post(url, json={"sample_ids": ["nope"]}).status_code == 422
    assert api.post(url, json={"subject": "nobody"}).status_code == 404
    with session_scope(api.ctx.session_factory) as s:
        assert s.query(Job).count() == 1
    # Retrain runs from the version's recipe, through the service.
    r = api.post(url, json={"subject": "user-3", "method": "retrain", "params": {"epochs": 10}})
    assert r.status_code == 202, r.text
    assert run_job(api.ctx, r.json()["job_id"], "w1") == RunOutcome.SUCCEEDED
    receipt = api.get(f"/v1/deletion-requests/{r.json()['id']}/receipt").json()
    assert receipt["exactness"]["stage"] == "exact"
    assert receipt["params"]["epochs"] == 10, "the request's params over the recipe"
    assert receipt["params"]["lr"] == RECIPE["lr"], "the recipe's where the request says nothing"


def test_retain_aware_methods_need_registered_data(api: ApiClient, digits: Digits) -> None:
    api.create_model("plain", ARCH)
    assert api.upload_version("plain", digits.checkpoint(0), digits.eval_blob()).status_code == 201
    samples = {"inputs": digits.x[:2].tolist(), "labels": digits.y[:2].tolist()}
    r = api.post("/v1/models/plain/deletion-requests", json={"samples": samples, "method": "scrub"})
    assert r.status_code == 422 and "retain set" in r.json()["detail"]
    r = api.post("/v1/models/plain/deletion-requests", json={"subject": "user-1"})
    assert r.status_code == 422 and r.json()["error"] == "NoTrainingData"


def test_rollback_and_retirement(api: ApiClient, digits: Digits) -> None:
    _setup(api, digits, models=("a",))
    ckpt = digits.checkpoint(5)
    assert api.upload_version("a", ckpt).status_code == 201  # v2: a new deploy, no data link
    # v2 is the latest: it cannot be retired; roll back to v1 instead (v3 = v1's bytes).
    assert api.delete("/v1/models/a/versions/2").status_code == 409
    r = api.post("/v1/models/a/rollback", json={"to_version": 1})
    assert r.status_code == 201 and r.json()["version"] == 3 and r.json()["parent_version"] == 1
    assert api.delete("/v1/models/a/versions/2").json()["retired_reason"] == "owner"
    assert api.get("/v1/models/a/versions/2/checkpoint").status_code == 410
    # An erasure retires every version up to its base; rolling back to one is refused.
    r = api.post("/v1/models/a/deletion-requests", json={"subject": "user-1"})
    assert run_job(api.ctx, r.json()["job_id"], "w1") == RunOutcome.SUCCEEDED
    r = api.post("/v1/models/a/rollback", json={"to_version": 3})
    assert r.status_code == 409 and r.json()["retired_reason"] == "erasure"
    assert api.post("/v1/models/a/rollback", json={"to_version": 1}).status_code == 409


def test_bad_links_are_refused(api: ApiClient, digits: Digits) -> None:
    _setup(api, digits, models=())
    api.create_model("m", ARCH)
    ckpt = digits.checkpoint(0)
    bad = [
        ({"dataset": "nope"}, 404),
        ({"dataset": "train", "dataset_version": "9"}, 404),
        ({"dataset": "train", "recipe": '{"epochs": 0}'}, 422),
        ({"dataset": "train", "recipe": '{"nope": 1}'}, 422),
        ({"dataset_version": "1"}, 422),
    ]
    for form, status in bad:
        r = api.post("/v1/models/m/versions", files={"checkpoint": ("m", ckpt)}, data=form)
        assert r.status_code == status, (form, r.text)
    assert api.get("/v1/models/m/versions").json()["items"] == []
    other = api.with_key(api.new_key(["models:write", "models:read", "deletions:write"], tenant="other"))
    other.create_model("m", ARCH)
    r = other.post("/v1/models/m/versions", files={"checkpoint": ("m", ckpt)}, data={"dataset": "train"})
    assert r.status_code == 404
    assert other.post("/v1/datasets/train/erasures", json={"subject": "user-1"}).status_code == 404


def _debug(api: ApiClient, job_id: str) -> Any:
    return api.get(f"/v1/jobs/{job_id}").json()


def test_training_jobs_and_eventual_exactness(api: ApiClient, digits: Digits) -> None:
    _setup(api, digits, models=("a",))
    # A training job makes a version of a new model from the registered data and a recipe.
    api.create_model("fresh", ARCH)
    recipe = {**RECIPE, "epochs": 5, "gradient_restriction_alpha": 0.005}
    r = api.post("/v1/models/fresh/training-jobs", json={"dataset": "train", "recipe": recipe})
    assert r.status_code == 202 and r.json()["kind"] == "train", r.text
    outcome = run_job(api.ctx, r.json()["id"], "w1")
    assert outcome == RunOutcome.SUCCEEDED, _debug(api, r.json()["id"])["error"]
    v1 = api.get("/v1/models/fresh/versions/1").json()
    assert v1["training_data"] == {"dataset": "train", "version": 1} and v1["recipe"]["epochs"] == 5
    bad = api.post("/v1/models/fresh/training-jobs", json={"dataset": "train", "recipe": {"epochs": 0}})
    assert bad.status_code == 422

    # Eventual exactness: after one erasure, model a is retrained exactly on the data left.
    r = api.patch("/v1/models/a", json={"exactness": {"after_erasures": 1}})
    assert r.status_code == 200 and r.json()["exactness"] == {"after_erasures": 1}, r.text
    req = api.post("/v1/models/a/deletion-requests", json={"subject": "user-1"}).json()
    publisher = api.ctx.publisher
    assert isinstance(publisher, FakePublisher)
    publisher.sent.clear()
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.SUCCEEDED
    [(_, payload)] = publisher.sent  # the exact retrain was queued when the erasure published
    exact_job = api.get(f"/v1/jobs/{payload['job_id']}").json()
    assert exact_job["kind"] == "train" and exact_job["reason"] == "exactness"
    assert run_job(api.ctx, exact_job["id"], "w1") == RunOutcome.SUCCEEDED
    done = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert done["stages"] == [{"stage": "approximate", "version": 2}, {"stage": "exact", "version": 3}]
    v3 = api.get("/v1/models/a/versions/3").json()
    assert v3["training_data"] == {"dataset": "train", "version": 2}, "retrained without the subject"
    gap = v3["metrics"]["approximate_vs_exact"]
    assert 0 <= gap["agreement"] <= 1 and gap["eval_accuracy_gap_points"] >= 0
    assert api.get("/v1/models/a/versions/2/checkpoint").status_code == 410
