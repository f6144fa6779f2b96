"""Issue 8, part B: reference models and the per-example membership test (offline LiRA) of each job.

On SQLite and PostgreSQL (``db_url``), jobs run by the test (a fake publisher, as in
test_lifecycle). The data: 400 digits of 40 subjects; subject user-7's 10 samples carry labels of
their own (shifted by one), which a model can only memorise, so a model that trained on them is
told apart from one that did not, sample by sample."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load, save
from sklearn.datasets import load_digits

from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from tests.jobs.helpers import FakePublisher, job_row
from tests.service_fixtures import ApiClient, AppPool, make_settings
from unlearning import build_model, load_checkpoint, state_dict_bytes
from unlearning.training import train

ARCH = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}
N_TRAIN = 400
# Full-batch steps: seconds on 2 cores, and enough to memorise the subjects' own labels.
RECIPE = {"epochs": 100, "lr": 0.03, "batch_size": 400, "optimizer": "adam", "seed": 0}
K = 4
_DATA: dict[str, Any] = {}


def _data() -> dict[str, Any]:
    if not _DATA:
        d = load_digits()
        x = torch.tensor(d.data[:600], dtype=torch.float32) / 16.0
        y = torch.tensor(d.target[:600], dtype=torch.int64)
        subjects = np.array([f"user-{i % 40}" for i in range(600)])
        own = torch.tensor([i < N_TRAIN and s in ("user-3", "user-7") for i, s in enumerate(subjects)])
        y = torch.where(own, (y + 1) % 10, y)
        torch.manual_seed(0)
        model = build_model(ARCH)
        recipe = {k: v for k, v in RECIPE.items() if k != "seed"}
        train(model, {"inputs": x[:N_TRAIN], "labels": y[:N_TRAIN]}, **recipe, seed=0, device="cpu")
        _DATA.update(x=x, y=y, subjects=subjects, checkpoint=state_dict_bytes(model))
    return _DATA


def _train_npz(d: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    ids = np.array([f"s{i}" for i in range(N_TRAIN)])
    np.savez(buf, inputs=d["x"][:N_TRAIN].numpy(), labels=d["y"][:N_TRAIN].numpy(), sample_ids=ids,
             subject_ids=d["subjects"][:N_TRAIN])  # fmt: skip
    return buf.getvalue()


def _subject(d: dict[str, Any], subject: str) -> bytes:
    idx = torch.as_tensor(np.nonzero(d["subjects"][:N_TRAIN] == subject)[0])
    return save({"inputs": d["x"][idx].contiguous(), "labels": d["y"][idx].contiguous()})


@pytest.fixture
def api(tmp_path: Path, db_url: str, app_pool: AppPool) -> Iterator[ApiClient]:
    settings = make_settings(tmp_path, database_url=db_url, reference_models=K)
    with app_pool.client(settings, tmp_path) as client:
        client.ctx.publisher = FakePublisher()
        yield client


def _register(api: ApiClient, name: str, *, linked: bool = True) -> None:
    d = _data()
    if api.get("/v1/datasets/train").status_code == 404:
        assert api.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201
        r = api.post("/v1/datasets/train/versions", files={"data": ("t.npz", _train_npz(d))})
        assert r.status_code == 201, r.text
    api.create_model(name, ARCH)
    ev = save({"inputs": d["x"][N_TRAIN:].contiguous(), "labels": d["y"][N_TRAIN:].contiguous()})
    link = {"dataset": "train", "dataset_version": "1", "recipe": json.dumps(RECIPE)} if linked else None
    files = {"checkpoint": ("m", d["checkpoint"]), "eval_set": ("e", ev)}
    r = api.post(f"/v1/models/{name}/versions", files=files, data=link)
    assert r.status_code == 201, r.text


def _delete(api: ApiClient, model: str, subject: str, **form: str) -> str:
    files = {"forget_set": ("f.safetensors", _subject(_data(), subject), "application/octet-stream")}
    r = api.post(f"/v1/models/{model}/deletion-requests", files=files, data=form)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _build_references(api: ApiClient, model: str) -> dict[str, Any]:
    r = api.post(f"/v1/models/{model}/references", json={"k": K})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "references" and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    assert run_job(api.ctx, r.json()["id"], "w1") == RunOutcome.SUCCEEDED
    metrics = job_row(api, r.json()["id"]).metrics
    assert metrics is not None
    return metrics


def test_references_are_trained_on_halves_and_kept_as_safetensors(api: ApiClient) -> None:
    _register(api, "a")
    m = _build_references(api, "a")
    assert m["k"] == K and m["n_samples"] == N_TRAIN and len(m["checkpoints"]) == K
    blob = load(api.ctx.storage.read_bytes(m["membership_key"]))
    in_mask = blob["in_mask"].bool()
    assert in_mask.shape == (K, N_TRAIN) and blob["keys"].shape == (N_TRAIN,)
    assert bool((in_mask.sum(0) == K // 2).all()), "every sample IN for exactly K/2 references"
    assert [r["n_train"] for r in m["references"]] == in_mask.sum(1).tolist()
    for key in m["checkpoints"]:
        net = build_model(ARCH)
        load_checkpoint(net, api.ctx.storage.read_bytes(key))  # safetensors, strict
    # No version was published: the model's latest version is still the uploaded one.
    assert api.get("/v1/models/a").json()["latest_version"] == 1


def test_each_job_records_tpr_at_fixed_fpr_beside_the_retrained_level(api: ApiClient) -> None:
    _register(api, "a")
    _build_references(api, "a")
    job_id = _delete(api, "a", "user-7")
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.SUCCEEDED
    metrics = job_row(api, job_id).metrics
    assert metrics is not None
    lira = metrics["lira"]
    assert lira["n_forget"] == lira["n_members"] == 10 and lira["n_forget_unmatched"] == 0
    assert lira["n_nonmembers"] == metrics["eval_split"]["n_check"] and lira["n_references"] == K
    assert lira["mode"] == "offline" and set(lira["tpr_at_fpr"]) == {"0.01", "0.05"}
    # The original memorised user-7's own labels: every sample stands out from its OUT references.
    # A reference as the target on the samples it never saw is the retrained level: near the FPR.
    before, retrained = lira["before"]["tpr_at_fpr"]["0.05"], lira["retrained_tpr_at_fpr"]["0.05"]
    assert before >= 0.7 and retrained <= 0.3 and before - retrained >= 0.5
    assert lira["retrained"]["n_members"] == 10 * (K - K // 2)
    print(
        f"\nLiRA TPR@5% FPR: before {lira['before']['tpr_at_fpr']['0.05']:.2f}, "
        f"after {lira['tpr_at_fpr']['0.05']:.2f}, retrained {lira['retrained_tpr_at_fpr']['0.05']:.2f}"
    )


def test_the_policy_can_require_the_membership_test(api: ApiClient) -> None:
    _register(api, "a")
    _register(api, "b", linked=False)
    _build_references(api, "a")
    # A run that changes nothing (a vanishing step) keeps user-3 memorised: refused on LiRA.
    still = '{"objective": "ascent", "anchor": "none", "early_stop": null, "epochs": 1, "lr": 1e-12}'
    strict = '{"max_lira_tpr_above_retrained": 0.2, "require_forgetting": false}'
    job_id = _delete(api, "a", "user-3", params=still, policy=strict)
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.FAILED
    job = job_row(api, job_id)
    assert job.error is not None and job.error["type"] == "PolicyRejected"
    check = job.error["checks"]["lira"]
    assert not check["ok"] and check["tpr"] > check["max_tpr_from_retrained"]
    assert check["max_tpr_from_retrained"] == pytest.approx(check["retrained_tpr"] + 0.2)
    # A model without references cannot meet a policy that asks for the test.
    job_id = _delete(api, "b", "user-7", policy='{"max_lira_tpr": 0.5}')
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.FAILED
    error = job_row(api, job_id).error
    assert error is not None and "no reference models" in error["checks"]["lira"]["reason"]


def test_references_need_registered_data_and_the_setting(api: ApiClient, make_api: Any) -> None:
    _register(api, "b", linked=False)
    r = api.post("/v1/models/b/references", json={"k": K})
    assert r.status_code == 422 and "training data" in r.json()["detail"]
    assert api.post("/v1/models/b/references", json={"k": 999}).status_code == 422
    off = make_api()  # UNLEARN_REFERENCE_MODELS=0, the default
    off.create_model("c", ARCH)
    r = off.post("/v1/models/c/references", json={})
    assert r.status_code == 409 and "off" in r.json()["detail"]
