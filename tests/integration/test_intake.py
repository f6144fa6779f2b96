# ruff: noqa: E501  (tables of cases read best one per line)
"""Deletion-request intake against the real app (SQLite and PostgreSQL): bad input is refused with
problem+json and stores NOTHING; idempotency keys; cancellation; reads and tenant isolation."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save
from sqlalchemy import func, select

from service.settings import Settings
from service.tables import DeletionRequest, Job, OutboxMessage
from tests.integration.conftest import DIGITS_ARCH, Digits, Stack
from tests.service_fixtures import ApiClient, make_settings

pytestmark = pytest.mark.timeout(120)

URL = "/v1/models/digits/deletion-requests"
MAX_BODY = 300_000


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, database_url=db_url, max_body_bytes=MAX_BODY, max_inline_samples=200)


@pytest.fixture
def api_digits(api: ApiClient, digits: Digits) -> ApiClient:
    api.create_model("digits", DIGITS_ARCH)
    r = api.upload_version("digits", digits.checkpoint, digits.eval_set)
    assert r.status_code == 201, r.text
    return api


def stored(api: ApiClient) -> dict[str, Any]:
    with api.ctx.session_factory() as s:
        counts = {
            t.__tablename__: s.scalar(select(func.count()).select_from(t))
            for t in (DeletionRequest, Job, OutboxMessage)
        }
    counts["forget_sets"] = len(api.ctx.storage.keys("forget-sets"))
    return counts


NOTHING = {"deletion_requests": 0, "jobs": 0, "outbox": 0, "forget_sets": 0}


def upload(api: Any, blob: bytes, **fields: str) -> Any:
    return api.post(URL, files={"forget_set": ("f.bin", blob, "application/octet-stream")}, data=fields)


def good_file(digits: Digits, n: int = 5) -> bytes:
    return digits.forget_file(slice(0, n))


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


BAD_FILES = {
    "pickle": lambda d: pickle.dumps({"inputs": d.x_train[:3].numpy(), "labels": d.y_train[:3].numpy()}),
    "torch_save": lambda d: _torch_save({"inputs": d.x_train[:3].clone(), "labels": d.y_train[:3].clone()}),
    "npz_object_array": lambda d: _npz(inputs=np.array([object()] * 3, dtype=object), labels=np.zeros(3)),
    "truncated_safetensors": lambda d: good_file(d)[:-100],
    "garbage": lambda d: b"\x00not a data set at all" * 10,
    "wrong_shape": lambda d: save(
        {"inputs": torch.zeros(4, 32), "labels": torch.zeros(4, dtype=torch.int64)}
    ),
    "nan": lambda d: save(
        {"inputs": torch.full((4, 64), float("nan")), "labels": torch.zeros(4, dtype=torch.int64)}
    ),
    "label_out_of_range": lambda d: save(
        {"inputs": torch.zeros(4, 64), "labels": torch.tensor([0, 1, 2, 10])}
    ),
    "negative_label": lambda d: save({"inputs": torch.zeros(2, 64), "labels": torch.tensor([0, -1])}),
    "empty": lambda d: save({"inputs": torch.zeros(0, 64), "labels": torch.zeros(0, dtype=torch.int64)}),
    "missing_labels": lambda d: save({"inputs": torch.zeros(4, 64)}),
    "float_labels": lambda d: save({"inputs": torch.zeros(2, 64), "labels": torch.tensor([0.5, 1.5])}),
}


def _torch_save(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_forget_set_file_stores_nothing(api_digits: ApiClient, digits: Digits, case: str) -> None:
    r = upload(api_digits, BAD_FILES[case](digits))
    assert r.status_code == 422, (case, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 422 and r.json()["detail"]
    assert stored(api_digits) == NOTHING


def test_bad_requests_store_nothing(api_digits: ApiClient, digits: Digits) -> None:
    api = api_digits
    ok_samples = {"inputs": digits.x_train[:2].tolist(), "labels": digits.y_train[:2].tolist()}
    cases: list[tuple[str, int, Any]] = [
        ("unknown method", 422, lambda: api.post(URL, json={"samples": ok_samples, "method": "nope"})),
        ("unknown param", 422, lambda: api.post(URL, json={"samples": ok_samples, "params": {"bogus": 1}})),
        ("param out of range", 422, lambda: api.post(URL, json={"samples": ok_samples, "params": {"lr": -1}})),
        ("retain-only method", 422, lambda: api.post(URL, json={"samples": ok_samples, "method": "retrain"})),
        ("unknown field", 422, lambda: api.post(URL, json={"samples": ok_samples, "colour": "red"})),
        ("unknown sample key", 422, lambda: api.post(URL, json={"samples": {**ok_samples, "x": [1]}})),
        ("policy over limit", 422,
         lambda: api.post(URL, json={"samples": ok_samples, "policy": {"max_eval_accuracy_drop": 0.9}})),
        ("unknown policy field", 422, lambda: api.post(URL, json={"samples": ok_samples, "policy": {"x": 1}})),
        ("ragged inline", 422, lambda: api.post(URL, json={"samples": {"inputs": [[0.0] * 64, [0.0]],
                                                                      "labels": [1, 2]}})),
        ("inline label range", 422, lambda: api.post(URL, json={"samples": {"inputs": [[0.0] * 64],
                                                                           "labels": [99]}})),
        ("inline empty", 422, lambda: api.post(URL, json={"samples": {"inputs": [], "labels": []}})),
        ("too many inline samples", 422, lambda: api.post(URL, json={"samples": {
            "inputs": [[0.0] * 64] * 201, "labels": [0] * 201}})),
        ("not json", 422, lambda: api.post(URL, content=b"{not json", headers={"content-type": "application/json"})),
        ("no samples", 422, lambda: api.post(URL, json={"subject": "x"})),
        ("multipart without file", 422, lambda: api.post(URL, data={"subject": "x"},
                                                          files={"other": ("a", b"b", "text/plain")})),
        ("multipart params not json", 422, lambda: upload(api, good_file(digits), params="{nope")),
        ("multipart unknown method", 422, lambda: upload(api, good_file(digits), method="nope")),
        ("oversize body", 413, lambda: upload(api, b"\x00" * (MAX_BODY + 10))),
        ("stale base_version", 409, lambda: api.post(URL, json={"samples": ok_samples, "base_version": 7})),
        ("unknown model", 404, lambda: api.post("/v1/models/nope/deletion-requests", json={"samples": ok_samples})),
        ("missing key", 401, lambda: api.anonymous().post(URL, json={"samples": ok_samples})),
        ("wrong key", 401, lambda: api.with_key("ulk_deadbeef_" + "B" * 43).post(URL, json={"samples": ok_samples})),
        ("read-only key", 403, lambda: api.with_key(api.new_key(["jobs:read", "models:read"])).post(
            URL, json={"samples": ok_samples})),
        ("another tenant's model", 404, lambda: api.with_key(api.new_key(["deletions:write"], tenant="other")).post(
            URL, json={"samples": ok_samples})),
        ("unsupported media type", 415, lambda: api.post(URL, content=b"x", headers={"content-type": "text/plain"})),
    ]  # fmt: skip
    for name, status, call in cases:
        r = call()
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), name
        assert stored(api) == NOTHING, name


def test_model_without_version_is_409(api: ApiClient) -> None:
    api.create_model("empty", DIGITS_ARCH)
    r = api.post(
        "/v1/models/empty/deletion-requests", json={"samples": {"inputs": [[0.0] * 64], "labels": [1]}}
    )
    assert r.status_code == 409, r.text
    assert stored(api) == NOTHING


def test_accepted_request_reads_and_batches(api_digits: ApiClient, digits: Digits) -> None:
    api = api_digits
    r1 = upload(api, good_file(digits, 5), subject="alice", base_version="1")
    assert r1.status_code == 202, r1.text
    body = r1.json()
    assert body["status"] == "queued" and body["n_samples"] == 5 and body["model"] == "digits"
    assert "sample_digests" not in body, "digests are a sub-resource, not part of every answer"
    digests = api.get(f"/v1/deletion-requests/{body['id']}/sample-digests").json()["sample_digests"]
    assert len(digests) == 5 and body["subject_digest"] and body["subject_digest"] != "alice"
    assert body["params"]["preset"] == "anchored", "the engine's default for imu, the service's too"
    # The same samples inline give the same digests (normalised before hashing).
    r2 = api.post(URL, json={"samples": {"inputs": digits.x_train[:5].tolist(),
                                         "labels": digits.y_train[:5].tolist()}})  # fmt: skip
    assert r2.status_code == 202
    assert (
        api.get(f"/v1/deletion-requests/{r2.json()['id']}/sample-digests").json()["sample_digests"] == digests
    )
    assert r2.json()["job_id"] == body["job_id"], "same method/params/policy joins the open batch"
    r3 = api.post(URL, json={"samples": {"inputs": digits.x_train[5:7].tolist(),
                                         "labels": digits.y_train[5:7].tolist()}, "method": "imu"})  # fmt: skip
    assert r3.status_code == 202 and r3.json()["job_id"] != body["job_id"], "other settings, other job"

    job = api.get(f"/v1/jobs/{body['job_id']}").json()
    assert job["status"] == "queued" and job["n_samples"] == 10 and job["n_requests"] == 2
    assert sorted(job["deletion_requests"]) == sorted([body["id"], r2.json()["id"]])
    assert stored(api) == {"deletion_requests": 3, "jobs": 2, "outbox": 2, "forget_sets": 2}

    got = api.get(f"/v1/deletion-requests/{body['id']}")
    assert got.status_code == 200 and got.json()["id"] == body["id"]
    listed = api.get(
        "/v1/deletion-requests", params={"model": "digits", "status": "queued", "limit": 2}
    ).json()
    assert len(listed["items"]) == 2 and listed["next_cursor"]
    rest = api.get(
        "/v1/deletion-requests", params={"model": "digits", "limit": 2, "cursor": listed["next_cursor"]}
    )
    assert len(rest.json()["items"]) == 1
    assert api.get("/v1/deletion-requests", params={"status": "completed"}).json()["items"] == []
    by_subject = api.get("/v1/deletion-requests", params={"subject": "alice"}).json()["items"]
    assert [r["id"] for r in by_subject] == [body["id"]]
    assert api.get("/v1/jobs", params={"model": "digits"}).json()["items"][0]["model"] == "digits"
    events = api.get("/v1/audit", params={"action": "deletion.requested"}).json()["items"]
    assert len(events) == 3 and all(len(e["payload"]["sample_digests"]) for e in events)

    # Another tenant sees none of it.
    other = api.with_key(api.new_key(["jobs:read", "deletions:write"], tenant="other"))
    assert other.get(f"/v1/deletion-requests/{body['id']}").status_code == 404
    assert other.get(f"/v1/jobs/{body['job_id']}").status_code == 404
    assert other.post(f"/v1/jobs/{body['job_id']}/cancel").status_code == 404
    assert other.get("/v1/deletion-requests").json()["items"] == []


def test_idempotency_key(api_digits: ApiClient, digits: Digits) -> None:
    api = api_digits
    payload = {"samples": {"inputs": digits.x_train[:3].tolist(), "labels": digits.y_train[:3].tolist()}}
    h = {"Idempotency-Key": "req-42"}
    r1 = api.post(URL, json=payload, headers=h)
    r2 = api.post(URL, json=payload, headers=h)
    assert r1.status_code == r2.status_code == 202
    assert r1.json() == r2.json()
    assert r2.headers["location"] == r1.headers["location"]
    assert stored(api)["deletion_requests"] == 1
    other = {"samples": {"inputs": digits.x_train[3:4].tolist(), "labels": digits.y_train[3:4].tolist()}}
    r3 = api.post(URL, json=other, headers=h)
    assert r3.status_code == 422 and "Idempotency-Key" in r3.json()["detail"]
    # Multipart: a retry re-encodes the body with a new boundary; still the same request.
    hm = {"Idempotency-Key": "file-1"}
    f = good_file(digits, 4)
    m1 = api.post(
        URL, files={"forget_set": ("f", f, "application/octet-stream")}, data={"subject": "s"}, headers=hm
    )
    m2 = api.post(
        URL, files={"forget_set": ("f", f, "application/octet-stream")}, data={"subject": "s"}, headers=hm
    )
    assert m1.status_code == m2.status_code == 202 and m1.json()["id"] == m2.json()["id"]
    assert stored(api)["deletion_requests"] == 2
    # The key is per tenant: another tenant's identical key is independent.
    assert stored(api)["jobs"] == 1


def test_cancel_queued_job(api_digits: ApiClient, digits: Digits) -> None:
    api = api_digits
    r = api.post(
        URL, json={"samples": {"inputs": digits.x_train[:3].tolist(), "labels": digits.y_train[:3].tolist()}}
    )
    job_id = r.json()["job_id"]
    c = api.post(f"/v1/jobs/{job_id}/cancel")
    assert c.status_code == 202, c.text
    assert c.json()["status"] == "cancelled"
    req = api.get(f"/v1/deletion-requests/{r.json()['id']}").json()
    assert req["status"] == "cancelled" and req["forget_set_purged"] is True
    assert api.ctx.storage.keys("forget-sets") == []
    again = api.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    assert api.post("/v1/jobs/job_missing/cancel").status_code == 404
    # The next request does not join the cancelled job.
    r2 = api.post(
        URL, json={"samples": {"inputs": digits.x_train[:1].tolist(), "labels": digits.y_train[:1].tolist()}}
    )
    assert r2.status_code == 202 and r2.json()["job_id"] != job_id
    actions = [e["action"] for e in api.get("/v1/audit").json()["items"]]
    assert "job.cancelled" in actions


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cancel_running_job_and_finished_job(make_stack, digits: Digits) -> None:
    """Embedded stack with a worker: a running job stops at its next step; nothing is published."""
    stack: Stack = make_stack()
    stack.register_digits(digits)
    stack.start_worker("c")
    # Within the operator bounds: every sample weighted (top_fraction 1), one per step, 1000 epochs:
    # 40,000 steps, each through the whole model (no feature cache).
    slow = {
        "preset": "official", "epochs": 1000, "batch_size": 1, "lr": 1e-5, "top_fraction": 1.0,
        "cache_features": False,
    }  # fmt: skip
    r = stack.submit("digits", samples=digits.samples(slice(0, 40)), method="imu", params=slow)
    job_id = r.json()["job_id"]
    stack.wait_job(job_id, timeout=90, until=lambda j: j["status"] == "running" and j["progress"] > 0.1)
    c = stack.api.post(f"/v1/jobs/{job_id}/cancel")
    assert c.status_code == 202 and c.json()["cancel_requested"] is True
    job = stack.wait_job(job_id, timeout=60)
    assert job["status"] == "cancelled" and job["result_version"] is None
    assert stack.api.get("/v1/models/digits").json()["latest_version"] == 1
    req = stack.api.get(f"/v1/deletion-requests/{r.json()['id']}").json()
    assert req["status"] == "cancelled" and req["forget_set_purged"]
    assert stack.api.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
    # The model lock was released: the next job runs and publishes version 2.
    r2 = stack.submit("digits", samples=digits.samples(torch.nonzero(digits.y_train == 3).flatten()[:20]))
    done = stack.wait_job(r2.json()["job_id"], timeout=90)
    assert done["status"] == "succeeded" and done["base_version"] == 1 and done["result_version"] == 2
    assert stack.api.post(f"/v1/jobs/{done['id']}/cancel").status_code == 409

    # Progress as Server-Sent Events: a finished job streams its state and ends.
    with stack.api.stream("GET", f"/v1/jobs/{done['id']}/events") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    assert "event: progress" in text and "event: end" in text
    first = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    assert first["status"] == "succeeded"
