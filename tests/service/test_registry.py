"""Models and versions: CRUD, uploads (good and bad), downloads with validators and ranges."""

from __future__ import annotations

import base64
import hashlib
import pickle

import pytest
import torch
from safetensors.torch import save

from tests.service_fixtures import MLP_ARCH, ApiClient, make_checkpoint, make_dataset

PROBLEM = "application/problem+json"


def assert_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


def test_models_crud_and_conflict(api: ApiClient) -> None:
    created = api.create_model("alpha", description="digits", tags=["a", "b"])
    assert created["name"] == "alpha"
    assert created["task"] == "classification"
    assert created["architecture"]["name"] == "mlp"
    assert created["architecture"]["config"]["input_dim"] == 64
    assert created["latest_version"] is None
    assert created["tags"] == ["a", "b"]

    again = api.post("/v1/models", json={"name": "alpha", "task": "classification", "architecture": MLP_ARCH})
    assert_problem(again, 409)

    assert api.get("/v1/models/alpha").json()["description"] == "digits"
    assert_problem(api.get("/v1/models/missing"), 404)
    names = [m["name"] for m in api.get("/v1/models").json()["items"]]
    assert names == ["alpha"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "task": "classification", "architecture": {"name": "nope", "config": {}}}, "nope"),
        (
            {"name": "x", "task": "classification", "architecture": {"name": "mlp", "config": {"bad": 1}}},
            "bad",
        ),
        ({"name": "x", "task": "causal-lm", "architecture": MLP_ARCH}, "classification"),
        ({"name": "bad name!", "task": "classification", "architecture": MLP_ARCH}, "name"),
        ({"name": "x", "task": "regression", "architecture": MLP_ARCH}, "task"),
    ],
)
def test_create_model_rejects_bad_input(sqlite_api: ApiClient, body: dict, fragment: str) -> None:
    problem = assert_problem(sqlite_api.post("/v1/models", json=body), 422)
    assert fragment in problem["detail"]
    assert sqlite_api.get("/v1/models").json()["items"] == []


def test_upload_and_download(api: ApiClient, mlp_checkpoint: bytes) -> None:
    api.create_model("m")
    eval_set = make_dataset(20)
    r = api.upload_version("m", mlp_checkpoint, eval_set=eval_set, description="first")
    assert r.status_code == 201, r.text
    v = r.json()
    sha = hashlib.sha256(mlp_checkpoint).hexdigest()
    assert v["version"] == 1
    assert v["sha256"] == sha
    assert v["size_bytes"] == len(mlp_checkpoint)
    assert v["parent_version"] is None and v["created_by_job"] is None
    assert v["status"] == "ready"
    assert v["description"] == "first"
    assert v["eval_set"] == {"sha256": hashlib.sha256(eval_set).hexdigest(), "n_samples": 20}
    assert r.headers["location"] == "/v1/models/m/versions/1"

    second = api.upload_version("m", make_checkpoint(seed=1)).json()
    assert second["version"] == 2 and second["eval_set"] is None
    assert api.get("/v1/models/m").json()["latest_version"] == 2
    assert api.get("/v1/models/m/versions/latest").json()["version"] == 2
    assert api.get("/v1/models/m/versions/1").json()["sha256"] == sha
    assert [x["version"] for x in api.get("/v1/models/m/versions").json()["items"]] == [1, 2]
    assert_problem(api.get("/v1/models/m/versions/3"), 404)
    assert_problem(api.get("/v1/models/m/versions/first"), 422)

    d = api.get("/v1/models/m/versions/1/checkpoint")
    assert d.status_code == 200
    assert d.content == mlp_checkpoint
    assert d.headers["etag"] == f'"{sha}"'
    digest = base64.b64encode(hashlib.sha256(mlp_checkpoint).digest()).decode()
    assert d.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert d.headers["accept-ranges"] == "bytes"
    assert int(d.headers["content-length"]) == len(mlp_checkpoint)

    actions = [e["action"] for e in api.get("/v1/audit?model=m").json()["items"]]
    assert actions == ["model.created", "version.created", "version.created", "checkpoint.downloaded"]


def test_ranges_and_conditional_requests(sqlite_api: ApiClient, mlp_checkpoint: bytes) -> None:
    api = sqlite_api
    api.create_model("m")
    sha = api.upload_version("m", mlp_checkpoint).json()["sha256"]
    url = "/v1/models/m/versions/latest/checkpoint"
    size = len(mlp_checkpoint)

    r = api.get(url, headers={"Range": "bytes=10-99"})
    assert r.status_code == 206
    assert r.content == mlp_checkpoint[10:100]
    assert r.headers["content-range"] == f"bytes 10-99/{size}"
    assert r.headers["etag"] == f'"{sha}"'

    r = api.get(url, headers={"Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == mlp_checkpoint[-16:]
    r = api.get(url, headers={"Range": f"bytes={size - 5}-"})
    assert r.status_code == 206 and r.content == mlp_checkpoint[-5:]
    r = api.get(url, headers={"Range": f"bytes=0-{size * 2}"})
    assert r.status_code == 206 and r.content == mlp_checkpoint

    problem = assert_problem(api.get(url, headers={"Range": f"bytes={size}-"}), 416)
    assert "range" in problem["detail"]
    assert api.get(url, headers={"Range": f"bytes={size}-"}).headers["content-range"] == f"bytes */{size}"

    # Several ranges: the server may (and does) answer with the whole representation.
    r = api.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == mlp_checkpoint

    # If-Range with a stale validator: the whole file, not the range.
    r = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"deadbeef"'})
    assert r.status_code == 200 and len(r.content) == size

    r = api.get(url, headers={"If-None-Match": f'"{sha}"'})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == f'"{sha}"'
    assert api.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

    h = api.head(url)
    assert h.status_code == 200 and int(h.headers["content-length"]) == size and h.content == b""


def _pickle_checkpoint() -> bytes:
    return pickle.dumps({"layers.0.weight": [[0.0] * 64] * 16})


def _truncated() -> bytes:
    data = make_checkpoint()
    return data[: len(data) // 2]


def _wrong_keys() -> bytes:
    from unlearning import build_model

    state = build_model(MLP_ARCH).state_dict()
    renamed = {f"renamed.{k}": v.contiguous() for k, v in state.items()}
    return save(renamed)


def _wrong_shapes() -> bytes:
    wider = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [32], "num_classes": 10}}
    return make_checkpoint(wider)


def _nan_weights() -> bytes:
    from unlearning import build_model

    state = {k: v.clone().contiguous() for k, v in build_model(MLP_ARCH).state_dict().items()}
    first = next(iter(state))
    state[first].view(-1)[0] = float("nan")
    return save(state)


@pytest.mark.parametrize(
    ("make_bad", "fragment"),
    [
        (_pickle_checkpoint, "pickle"),
        (_truncated, ""),
        (_wrong_keys, "keys"),
        (_wrong_shapes, "shape"),
        (_nan_weights, "NaN"),
        (lambda: b"", "empty"),
    ],
    ids=["pickle", "truncated", "wrong-keys", "wrong-shapes", "nan", "empty"],
)
def test_bad_checkpoint_is_422_and_stores_nothing(api: ApiClient, make_bad, fragment: str) -> None:
    api.create_model("m")
    audit_before = api.get("/v1/audit/verify").json()["length"]
    problem = assert_problem(api.upload_version("m", make_bad(), eval_set=make_dataset(8)), 422)
    assert fragment in problem["detail"]
    assert api.ctx.storage.keys() == []
    assert api.get("/v1/models/m/versions").json()["items"] == []
    assert api.get("/v1/models/m").json()["latest_version"] is None
    assert api.get("/v1/audit/verify").json()["length"] == audit_before


@pytest.mark.parametrize(
    ("make_eval", "fragment"),
    [
        (lambda: make_dataset(8, num_classes=50, seed=3), "label"),
        (lambda: make_dataset(8, input_dim=10), "shape"),
        (lambda: pickle.dumps([1, 2, 3]), ""),
        (lambda: save({"inputs": torch.full((4, 64), float("nan")), "labels": torch.zeros(4)}), ""),
    ],
    ids=["labels-out-of-range", "wrong-input-shape", "pickle", "nan-inputs"],
)
def test_bad_eval_set_is_422_and_stores_nothing(sqlite_api: ApiClient, mlp_checkpoint, make_eval, fragment):
    api = sqlite_api
    api.create_model("m")
    problem = assert_problem(api.upload_version("m", mlp_checkpoint, eval_set=make_eval()), 422)
    assert fragment in problem["detail"]
    assert api.ctx.storage.keys() == []
    assert api.get("/v1/models/m/versions").json()["items"] == []


def test_npz_eval_set_is_accepted(sqlite_api: ApiClient, mlp_checkpoint: bytes) -> None:
    sqlite_api.create_model("m")
    r = sqlite_api.upload_version("m", mlp_checkpoint, eval_set=make_dataset(12, fmt="npz"))
    assert r.status_code == 201, r.text
    assert r.json()["eval_set"]["n_samples"] == 12


def test_missing_checkpoint_field_is_422(sqlite_api: ApiClient) -> None:
    sqlite_api.create_model("m")
    r = sqlite_api.post("/v1/models/m/versions", files={"other": ("x", b"123")})
    body = assert_problem(r, 422)
    assert any("checkpoint" in e["loc"] for e in body["errors"])


def test_upload_to_unknown_model_is_404_and_stores_nothing(sqlite_api: ApiClient, mlp_checkpoint) -> None:
    assert_problem(sqlite_api.upload_version("ghost", mlp_checkpoint), 404)
    assert sqlite_api.ctx.storage.keys() == []


def test_other_tenant_sees_404_never_403(api: ApiClient, mlp_checkpoint: bytes) -> None:
    api.create_model("private")
    api.upload_version("private", mlp_checkpoint)
    other = api.with_key(api.new_key(["models:read", "models:write"], tenant="other-co"))
    for path in (
        "/v1/models/private",
        "/v1/models/private/versions",
        "/v1/models/private/versions/1",
        "/v1/models/private/versions/1/checkpoint",
    ):
        assert_problem(other.get(path), 404)
    upload = other.post("/v1/models/private/versions", files={"checkpoint": ("c", mlp_checkpoint)})
    assert_problem(upload, 404)
    assert other.get("/v1/models").json()["items"] == []
    # The same name is free in the other tenant.
    r = other.post("/v1/models", json={"name": "private", "task": "classification", "architecture": MLP_ARCH})
    assert r.status_code == 201
    assert len(api.get("/v1/models").json()["items"]) == 1


def test_pagination(sqlite_api: ApiClient) -> None:
    api = sqlite_api
    for i in range(7):
        api.create_model(f"m{i}")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = api.get("/v1/models", params=params).json()
        seen += [m["name"] for m in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in range(7)]
    assert pages == 3
    assert_problem(api.get("/v1/models", params={"limit": 0}), 422)
    assert_problem(api.get("/v1/models", params={"limit": 201}), 422)
    assert_problem(api.get("/v1/models", params={"cursor": "not-a-cursor"}), 422)
    assert_problem(api.get("/v1/models", params={"colour": "red"}), 422)


def test_concurrent_uploads_get_consecutive_versions(api: ApiClient) -> None:
    import threading

    api.create_model("m")
    checkpoints = [make_checkpoint(seed=i) for i in range(6)]
    results: list[int] = []
    barrier = threading.Barrier(len(checkpoints))

    def upload(data: bytes) -> None:
        barrier.wait()
        r = api.upload_version("m", data)
        results.append(r.status_code if r.status_code != 201 else r.json()["version"])

    threads = [threading.Thread(target=upload, args=(c,)) for c in checkpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    listed = api.get("/v1/models/m/versions").json()["items"]
    assert sorted(v["sha256"] for v in listed) == sorted(hashlib.sha256(c).hexdigest() for c in checkpoints)
    assert api.get("/v1/models/m").json()["latest_version"] == 6
    assert api.get("/v1/audit/verify").json()["ok"] is True
