"""Issue 8, item 3: a language-model deletion through the service, on its defaults.

A tiny transformer trained on sequences of three Markov chains (the IMU paper's synthetic task);
the request deletes every training sequence of chain 0, and the version's eval set holds held-out
sequences of the chains it keeps. With the default method, params and acceptance policy (no budget
raised) the job publishes a model that forgot the chain and still models the kept ones: it is the
same run as the ``markov-chain0`` rows of ``benchmarks/RESULTS.md``, small enough for a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save

from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from tests.jobs.helpers import FakePublisher, job_row
from tests.service_fixtures import ApiClient, make_settings, start_api
from unlearning import build_model, builtin_data, state_dict_bytes
from unlearning.training import train

ARCH = {
    "name": "tiny-transformer",
    "config": {"vocab_size": 12, "max_len": 16, "d_model": 32, "n_layers": 1, "n_heads": 2},
}


@pytest.fixture(scope="module")
def markov() -> dict[str, Any]:
    ds = builtin_data.markov_chains(0, n_chains=3, vocab_size=12, seq_len=16, n_per_chain=80)
    torch.manual_seed(0)
    model = build_model(ARCH)
    train(model, ds["train"], epochs=25, lr=3e-3, batch_size=32, seed=0, device="cpu")
    forget, _ = builtin_data.forget_split(ds, "class", cls=0)
    kept = ds["test_chain"] != 0
    return {
        "checkpoint": state_dict_bytes(model),
        "forget": save({"input_ids": forget["input_ids"].contiguous()}),
        "eval": save({"input_ids": ds["test"]["input_ids"][kept].contiguous()}),
    }


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    client = start_api(make_settings(tmp_path))
    client.ctx.publisher = FakePublisher()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def test_default_deletion_of_a_source_passes_the_default_policy(api: ApiClient, markov: dict) -> None:
    r = api.post("/v1/models", json={"name": "lm", "task": "causal-lm", "architecture": ARCH})
    assert r.status_code == 201, r.text
    assert api.upload_version("lm", markov["checkpoint"], eval_set=markov["eval"]).status_code == 201
    files = {"forget_set": ("chain0.safetensors", markov["forget"], "application/octet-stream")}
    r = api.post("/v1/models/lm/deletion-requests", files=files)  # no method, params or policy
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.SUCCEEDED
    job = job_row(api, job_id)
    metrics, method = job.metrics, job.method
    assert metrics is not None and method == "ga"
    report = metrics  # the engine's report, as the job recorded it
    assert report["objective"] == "npo" and report["early_stop"] is None
    assert report["anchor_copies"] > 0
    before, after = report["before"], report["after"]
    # Forgotten: the chain's sequences became less likely than the kept chains' held-out ones
    # (before: more likely); kept: the check half of the eval set (which the run never saw) lost
    # little accuracy and loss, not the collapse the issue measured (eval loss 1.51 → 4.12 with the
    # budget raised).
    assert before["forget_loss"] < before["eval_loss"] and before["mia_auc"] > 0.7
    assert after["forget_loss"] > after["eval_loss"] and after["mia_auc"] < 0.5
    assert after["forget_loss"] > before["forget_loss"] + 0.4
    assert before["eval_accuracy"] - after["eval_accuracy"] <= 0.05
    assert after["eval_loss"] < before["eval_loss"] + 0.2
    assert api.get("/v1/models/lm").json()["latest_version"] == 2
