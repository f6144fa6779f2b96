"""What the console tests look at, made through the real API (no rows written behind its back).

A training set with data subjects, a model trained on it, and two deletion requests that the real
worker runs: one by subject reference (an erasure: the data set gets a new version and the version
trained on the old one is retired, so the lineage shows a retired version with its reason), one
with a forget-set file and a subject of its own that the acceptance policy rejects (so the subject
search has a second request to find and a job page shows a failed check).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.integration.conftest import DIGITS_ARCH, Digits

MODEL = "digits"
DATASET = "digits-train"
ERASED_SUBJECT = "42"  # a data subject of the registered training set
INLINE_SUBJECT = "user-7"  # the subject of a request that carries its samples
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Seeded:
    model: str
    dataset: str
    erasure_request: dict[str, Any]  # the by-subject request, completed
    erasure_job: dict[str, Any]
    inline_request: dict[str, Any]  # the request with its own samples, rejected by the policy
    inline_job: dict[str, Any]
    versions: list[dict[str, Any]]


def _ok(r: httpx.Response, status: int) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def _dataset_file(digits: Digits) -> bytes:
    import torch
    from safetensors.torch import save

    n = len(digits.y_train)
    ids = torch.arange(n, dtype=torch.int64)
    # Subjects 1..200, several samples each: subject 42 owns about 7 of them.
    subjects = ids % 200 + 1
    return save(
        {
            "inputs": digits.x_train.contiguous(),
            "labels": digits.y_train.contiguous(),
            "sample_ids": ids,
            "subject_ids": subjects,
        }
    )


def wait_job(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = _ok(client.get(f"/v1/jobs/{job_id}"), 200)
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


# One ascent step far too large: utility collapses, so the acceptance policy rejects the job on
# its eval-accuracy check whatever the forget samples look like: the console shows a failed check.
_NO_OP_PARAMS = {
    "preset": "official",
    "lr": 1.0,
    "lr_mode": "fixed",
    "epochs": 1,
    "max_epochs": 1,
    "step_schedule": "constant",
}
_STRICT_POLICY = {"forget_accuracy_margin": 0, "mia_auc_margin": 0}


def submit_rejected(client: httpx.Client, digits: Digits, rows: Any, subject: str) -> dict[str, Any]:
    r = client.post(
        f"/v1/models/{MODEL}/deletion-requests",
        files={"forget_set": ("forget.safetensors", digits.forget_file(rows), "application/octet-stream")},
        data={
            "subject": subject,
            "method": "ga",
            "params": json.dumps(_NO_OP_PARAMS),
            "policy": json.dumps(_STRICT_POLICY),
        },
    )
    return _ok(r, 202)


def seed(client: httpx.Client, digits: Digits) -> Seeded:
    _ok(client.post("/v1/datasets", json={"name": DATASET, "task": "classification"}), 201)
    files = {"data": ("train.safetensors", _dataset_file(digits), "application/octet-stream")}
    _ok(client.post(f"/v1/datasets/{DATASET}/versions", files=files), 201)
    body = {"name": MODEL, "task": "classification", "architecture": DIGITS_ARCH, "tags": ["console"]}
    _ok(client.post("/v1/models", json=body), 201)
    files = {
        "checkpoint": ("v1.safetensors", digits.checkpoint, "application/octet-stream"),
        "eval_set": ("eval.safetensors", digits.eval_set, "application/octet-stream"),
    }
    _ok(client.post(f"/v1/models/{MODEL}/versions", files=files, data={"dataset": DATASET}), 201)

    erasure = _ok(client.post(f"/v1/models/{MODEL}/deletion-requests", json={"subject": ERASED_SUBJECT}), 202)
    erasure_job = wait_job(client, erasure["job_id"])
    inline = submit_rejected(client, digits, _correct_rows(digits, 20), INLINE_SUBJECT)
    inline_job = wait_job(client, inline["job_id"])
    versions = _ok(client.get(f"/v1/models/{MODEL}/versions"), 200)["items"]
    return Seeded(
        model=MODEL,
        dataset=DATASET,
        erasure_request=_ok(client.get(f"/v1/deletion-requests/{erasure['id']}"), 200),
        erasure_job=erasure_job,
        inline_request=_ok(client.get(f"/v1/deletion-requests/{inline['id']}"), 200),
        inline_job=inline_job,
        versions=versions,
    )


def _correct_rows(digits: Digits, n: int) -> Any:
    """Rows of training samples the trained model classifies correctly (so forget accuracy 1)."""
    import torch

    from unlearning import build_model, load_checkpoint

    net = build_model(DIGITS_ARCH)
    load_checkpoint(net, digits.checkpoint)
    with torch.no_grad():
        right = net(digits.x_train).argmax(-1) == digits.y_train
    return torch.nonzero(right).flatten()[100 : 100 + n]
