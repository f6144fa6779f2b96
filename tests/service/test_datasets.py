"""Training data sets: the API (create, upload, list, get, refusals) and the library functions
the erasure jobs call (find, read, retain, erase, purge, delete), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save
from sqlalchemy import select

from service.datasets import logic
from service.datasets.records import get_dataset, get_version
from service.datasets.shards import SHARD_KIND
from service.db import session_scope
from service.errors import Problem
from service.settings import Settings
from service.tables import AuditEvent, DatasetSample, DatasetShard, DatasetVersion, Tenant
from tests.service_fixtures import ApiClient, make_settings

PROBLEM = "application/problem+json"
SHARD = 8  # samples per shard in this module's apps: a few dozen samples make several shards
INPUT_DIM = 6


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, database_url=db_url, dataset_shard_samples=SHARD)


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


# -- building uploads ---------------------------------------------------------------------------


def features(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, INPUT_DIM, generator=g), torch.randint(0, 5, (n,), generator=g)


def subjects_of(n: int) -> list[int]:
    """Subject i % 7 + 1 owns sample i: subject 3 has samples 2, 9, 16, ..."""
    return [i % 7 + 1 for i in range(n)]


def upload_bytes(n: int = 40, *, fmt: str = "safetensors", subjects: bool = True, **columns: Any) -> bytes:
    """Classification samples with int64 sample ids 1000+i (strings "s<i>" in npz) and subjects."""
    inputs, labels = features(n)
    arrays: dict[str, Any] = {"inputs": inputs, "labels": labels}
    if fmt == "npz":
        arrays["sample_ids"] = np.array([f"s{i}" for i in range(n)])
        if subjects:
            arrays["subject_ids"] = np.array([f"user-{s}" for s in subjects_of(n)])
    else:
        arrays["sample_ids"] = torch.arange(1000, 1000 + n, dtype=torch.int64)
        if subjects:
            arrays["subject_ids"] = torch.tensor(subjects_of(n), dtype=torch.int64)
    arrays.update(columns)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    return encode(arrays, fmt)


def encode(arrays: dict[str, Any], fmt: str) -> bytes:
    if fmt == "npz":
        buf = io.BytesIO()
        np.savez(buf, **{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in arrays.items()})
        return buf.getvalue()
    return save({k: torch.as_tensor(v).contiguous() for k, v in arrays.items()})


def create(api: ApiClient, name: str = "train", task: str = "classification") -> dict[str, Any]:
    r = api.post("/v1/datasets", json={"name": name, "task": task, "description": "d"})
    assert r.status_code == 201, r.text
    return r.json()


def upload(api: ApiClient, blob: bytes, name: str = "train", filename: str = "data.safetensors") -> Any:
    return api.post(
        f"/v1/datasets/{name}/versions",
        files={"data": (filename, blob, "application/octet-stream")},
        data={"description": "first"},
    )


def tenant_id(api: ApiClient) -> str:
    with session_scope(api.ctx.session_factory) as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == api.settings.admin_tenant)).one()


def version_row(api: ApiClient, name: str = "train", version: int | None = None) -> DatasetVersion:
    tenant = tenant_id(api)
    with session_scope(api.ctx.session_factory) as session:
        return get_version(session, get_dataset(session, tenant, name), version)


def shard_keys(api: ApiClient, version_id: str) -> dict[int, str]:
    with session_scope(api.ctx.session_factory) as session:
        rows = session.execute(
            select(DatasetShard.shard, DatasetShard.storage_key).where(
                DatasetShard.dataset_version_id == version_id
            )
        )
        return {shard: key for shard, key in rows}


def dataset_events(api: ApiClient) -> list[tuple[str, dict[str, Any]]]:
    with session_scope(api.ctx.session_factory) as session:
        rows = session.execute(
            select(AuditEvent.action, AuditEvent.payload)
            .where(AuditEvent.action.like("dataset.%"))
            .order_by(AuditEvent.ts)
        )
        return [(a, p) for a, p in rows]


def stored_shards(api: ApiClient) -> list[str]:
    return api.ctx.storage.keys(SHARD_KIND)


@pytest.fixture
def reads(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The keys the artifact store is asked to read, in order."""
    seen: list[str] = []
    storage = api.ctx.storage
    original = storage.read_bytes

    def counting(key: str) -> bytes:
        seen.append(key)
        return original(key)

    monkeypatch.setattr(storage, "read_bytes", counting)
    yield seen


# -- the API ------------------------------------------------------------------------------------


def test_create_list_get_and_conflict(api: ApiClient) -> None:
    created = create(api, "train")
    assert created["task"] == "classification" and created["latest_version"] is None
    create(api, "corpus", task="language-modeling")
    assert_problem(api.post("/v1/datasets", json={"name": "train", "task": "classification"}), 409)
    assert_problem(api.post("/v1/datasets", json={"name": "x", "task": "causal-lm"}), 422)
    assert_problem(api.post("/v1/datasets", json={"name": "bad name!", "task": "classification"}), 422)
    assert [d["name"] for d in api.get("/v1/datasets").json()["items"]] == ["corpus", "train"]
    assert api.get("/v1/datasets/corpus").json()["task"] == "language-modeling"
    assert_problem(api.get("/v1/datasets/missing"), 404)
    page = api.get("/v1/datasets?limit=1").json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def test_upload_list_and_get_versions(api: ApiClient) -> None:
    create(api)
    blob = upload_bytes(40)
    r = upload(api, blob)
    assert r.status_code == 201, r.text
    v = r.json()
    assert r.headers["location"] == "/v1/datasets/train/versions/1"
    assert v["version"] == 1 and v["status"] == "ready" and v["source"] == "upload"
    assert v["n_samples"] == 40 and v["n_shards"] == 5 and v["shard_samples"] == SHARD
    assert v["columns"] == {
        "inputs": {"dtype": "float32", "shape": [INPUT_DIM]},
        "labels": {"dtype": "int64", "shape": []},
    }
    assert v["sample_id_type"] == "int"
    assert v["has_subjects"] is True and v["n_subjects"] == 7
    assert v["upload"]["format"] == "safetensors" and len(v["upload"]["sha256"]) == 64
    assert v["erasure"] is None and v["parent_version"] is None
    # Subject ids never leave the database, raw or digested.
    assert "subject_ids" not in r.text and "user-" not in r.text
    assert len(stored_shards(api)) == 5

    second = upload(api, upload_bytes(12, fmt="npz"), filename="data.npz").json()
    assert second["version"] == 2 and second["sample_id_type"] == "str" and second["n_shards"] == 2
    assert second["upload"]["format"] == "npz"
    assert api.get("/v1/datasets/train").json()["latest_version"] == 2
    assert api.get("/v1/datasets/train/versions/latest").json()["version"] == 2
    assert api.get("/v1/datasets/train/versions/1").json() == v
    assert [x["version"] for x in api.get("/v1/datasets/train/versions").json()["items"]] == [1, 2]
    assert_problem(api.get("/v1/datasets/train/versions/3"), 404)
    assert_problem(api.get("/v1/datasets/train/versions/one"), 422)
    assert [a for a, _ in dataset_events(api)] == [
        "dataset.created",
        "dataset.version_created",
        "dataset.version_created",
    ]


def test_language_modeling_upload(api: ApiClient) -> None:
    create(api, "corpus", task="language-modeling")
    ids = torch.randint(0, 50, (20, 6))
    mask = torch.ones(20, 6, dtype=torch.int64)
    mask[:, -1] = 0
    blob = encode({"input_ids": ids, "attention_mask": mask, "sample_ids": torch.arange(20)}, "safetensors")
    v = upload(api, blob, name="corpus").json()
    assert v["n_samples"] == 20 and v["has_subjects"] is False
    assert set(v["columns"]) == {"input_ids", "attention_mask"}
    # a classification set's labels have no place in a language-modeling set
    bad = encode({"input_ids": ids, "labels": torch.zeros(20), "sample_ids": torch.arange(20)}, "safetensors")
    assert "labels" in assert_problem(upload(api, bad, name="corpus"), 422)["detail"]


def test_other_tenants_and_scopes(api: ApiClient) -> None:
    create(api)
    assert upload(api, upload_bytes(10)).status_code == 201
    other = api.with_key(api.new_key(["models:read", "models:write"], tenant="other"))
    assert_problem(other.get("/v1/datasets/train"), 404)
    assert_problem(other.get("/v1/datasets/train/versions/1"), 404)
    assert_problem(upload(other, upload_bytes(10)), 404)
    assert other.get("/v1/datasets").json()["items"] == []
    # the same name is free in another tenant
    assert other.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201

    reader = api.with_key(api.new_key(["models:read"]))
    assert reader.get("/v1/datasets/train").status_code == 200
    assert_problem(reader.post("/v1/datasets", json={"name": "x", "task": "classification"}), 403)
    assert_problem(upload(reader, upload_bytes(10)), 403)
    assert_problem(api.anonymous().get("/v1/datasets"), 401)


def _object_array_npz() -> bytes:
    # np.savez pickles object arrays; the service must refuse them without unpickling.
    buf = io.BytesIO()
    ids = np.array(["a", 1, None], dtype=object)
    np.savez(buf, inputs=np.zeros((3, INPUT_DIM), np.float32), labels=np.zeros(3, np.int64), sample_ids=ids)
    return buf.getvalue()


def _nan_in_last_shard() -> bytes:
    inputs, labels = features(30)
    inputs[29, 2] = float("inf")
    return encode({"inputs": inputs, "labels": labels, "sample_ids": torch.arange(30)}, "safetensors")


def _duplicate_ids() -> bytes:
    ids = torch.arange(20)
    ids[13] = 4
    return upload_bytes(20, sample_ids=ids)


BAD_UPLOADS = {
    "duplicate-sample-ids": (_duplicate_ids, "4 is the id of samples 4 and 13"),
    "duplicate-string-ids": (
        lambda: upload_bytes(6, fmt="npz", sample_ids=np.array(["a", "b", "c", "b", "e", "f"])),
        "'b'",
    ),
    "subjects-wrong-length": (
        lambda: upload_bytes(12, subject_ids=torch.arange(11)),
        "subject_ids has 11 values but the data set has 12",
    ),
    "labels-wrong-length": (
        lambda: upload_bytes(12, labels=torch.zeros(10, dtype=torch.int64)),
        "labels has 10",
    ),
    "labels-wrong-shape": (lambda: upload_bytes(12, labels=torch.zeros(12, 2, dtype=torch.int64)), "labels"),
    "npz-object-array": (_object_array_npz, "object"),
    "nan-in-last-shard": (_nan_in_last_shard, "first at sample 29"),
    "no-sample-ids": (lambda: upload_bytes(8, sample_ids=None, subject_ids=None), "sample_ids"),
    "float-sample-ids": (lambda: upload_bytes(8, sample_ids=torch.arange(8.0)), "integers"),
    "empty-string-id": (lambda: upload_bytes(3, fmt="npz", sample_ids=np.array(["a", "", "c"])), "empty id"),
    "nul-in-id": (lambda: upload_bytes(3, fmt="npz", sample_ids=np.array(["a", "b\x00c", "d"])), "sample 1"),
    "id-too-long": (
        lambda: upload_bytes(2, fmt="npz", sample_ids=np.array(["a", "x" * 201])),
        "201 characters",
    ),
    "unknown-array": (lambda: upload_bytes(8, weights=torch.zeros(8)), "weights"),
    "negative-label": (lambda: upload_bytes(8, labels=torch.full((8,), -1)), "labels"),
    "pickle": (lambda: b"\x80\x04" + b"\x00" * 64, "pickle"),
    "not-a-file": (lambda: b"hello world, not tensors", "safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
def test_bad_upload_is_422_and_stores_nothing(api: ApiClient, case: str) -> None:
    make, fragment = BAD_UPLOADS[case]
    create(api)
    events = dataset_events(api)
    problem = assert_problem(upload(api, make()), 422)
    assert fragment in problem["detail"]
    assert api.ctx.storage.keys() == []
    assert api.get("/v1/datasets/train/versions").json()["items"] == []
    assert api.get("/v1/datasets/train").json()["latest_version"] is None
    assert dataset_events(api) == events


def test_limits(make_api: Any) -> None:
    few = make_api(dataset_max_samples=10)
    create(few)
    problem = assert_problem(upload(few, upload_bytes(11)), 422)
    assert "too many samples: 11" in problem["detail"]
    assert assert_problem(upload(few, upload_bytes(11, fmt="npz"), filename="d.npz"), 422)
    assert upload(few, upload_bytes(10)).status_code == 201

    small = make_api(dataset_max_bytes=2000)
    create(small, "t2")
    problem = assert_problem(upload(small, upload_bytes(200), name="t2"), 413)
    assert problem["max_bytes"] == 2000
    # A small .npz that inflates past the limit is refused from its declared sizes.
    buf = io.BytesIO()
    zeros = np.zeros((400, INPUT_DIM), np.float32)
    np.savez_compressed(buf, inputs=zeros, labels=np.zeros(400, np.int64), sample_ids=np.arange(400))
    assert len(buf.getvalue()) < 2000
    problem = assert_problem(upload(small, buf.getvalue(), name="t2", filename="d.npz"), 422)
    assert "inflates" in problem["detail"]
    assert small.get("/v1/datasets/t2/versions").json()["items"] == []
    assert stored_shards(small) == []


def test_fortran_ordered_npz_is_read_like_any_other(api: ApiClient) -> None:
    inputs, labels = features(20)
    buf = io.BytesIO()
    np.savez(buf, inputs=np.asfortranarray(inputs.numpy()), labels=labels.numpy(), sample_ids=np.arange(20))
    create(api)
    v = upload(api, buf.getvalue(), filename="d.npz").json()
    data = logic.read_samples(api.ctx, version_row(api).id, [0, 19, 7])
    assert v["n_samples"] == 20
    assert torch.equal(data["inputs"], inputs[[0, 19, 7]])


def test_a_large_upload_is_indexed_in_seconds(make_api: Any, db_url: str) -> None:
    big = make_api(database_url=db_url)  # default shard size: 1024 samples
    create(big)
    n = 50_000
    g = torch.Generator().manual_seed(0)
    blob = encode(
        {
            "inputs": torch.randn(n, 4, generator=g),
            "labels": torch.randint(0, 10, (n,), generator=g),
            "sample_ids": torch.arange(n, dtype=torch.int64) * 3,
            "subject_ids": torch.arange(n, dtype=torch.int64) // 5,
        },
        "safetensors",
    )
    started = time.perf_counter()
    r = upload(big, blob)
    elapsed = time.perf_counter() - started
    assert r.status_code == 201, r.text
    assert r.json()["n_shards"] == 49 and r.json()["n_subjects"] == 10_000
    assert elapsed < 30, f"a 50,000-sample upload took {elapsed:.1f} s"
    with session_scope(big.ctx.session_factory) as session:
        found = logic.find_samples(session, big.ctx, tenant_id(big), "train", subject=9_999)
    assert found.sample_ids == tuple(3 * i for i in range(49_995, 50_000))
    assert found.shards == (48,)


# -- the library functions ------------------------------------------------------------------------


def test_find_samples(api: ApiClient, reads: list[str]) -> None:
    create(api)
    upload(api, upload_bytes(40))
    tenant = tenant_id(api)
    with session_scope(api.ctx.session_factory) as session:
        by_subject = logic.find_samples(session, api.ctx, tenant, "train", subject=3)
        as_text = logic.find_samples(session, api.ctx, tenant, "train", subject="3", version=1)
        by_ids = logic.find_samples(session, api.ctx, tenant, "train", sample_ids=[1039, "1000", 1017])
        both = logic.find_samples(session, api.ctx, tenant, "train", subject=3, sample_ids=[1000])
    # subject 3 holds samples 2, 9, 16, 23, 30, 37: shards 0..4
    assert by_subject.sample_ids == (1002, 1009, 1016, 1023, 1030, 1037)
    assert by_subject.shards == (0, 1, 2, 3, 4) and len(by_subject.shard_keys) == 5
    assert by_subject.version == 1 and by_subject.dataset_name == "train"
    assert as_text == by_subject
    assert by_ids.sample_ids == (1000, 1017, 1039) and by_ids.shards == (0, 2, 4)
    assert both.sample_ids == (1000, *by_subject.sample_ids)
    assert reads == []  # the index answers; no shard is read

    with session_scope(api.ctx.session_factory) as session:
        with pytest.raises(Problem) as unknown_subject:
            logic.find_samples(session, api.ctx, tenant, "train", subject=99)
        assert unknown_subject.value.status == 404
        with pytest.raises(Problem) as missing:
            logic.find_samples(session, api.ctx, tenant, "train", sample_ids=[1000, 5, "x"])
        assert missing.value.status == 422
        with pytest.raises(Problem) as missing_ints:
            logic.find_samples(session, api.ctx, tenant, "train", sample_ids=[1000, 5, 6])
        assert missing_ints.value.status == 422
        assert missing_ints.value.extra["missing_sample_ids"] == [5, 6]
        with pytest.raises(Problem) as other_tenant:
            logic.find_samples(session, api.ctx, "ten_other", "train", subject=3)
        assert other_tenant.value.status == 404
        with pytest.raises(Problem) as nothing:
            logic.find_samples(session, api.ctx, tenant, "train")
        assert nothing.value.status == 422


def test_subjects_are_stored_as_keyed_digests(api: ApiClient) -> None:
    create(api)
    upload(api, upload_bytes(14, fmt="npz"), filename="d.npz")
    tenant = tenant_id(api)
    with session_scope(api.ctx.session_factory) as session:
        digests = set(session.scalars(select(DatasetSample.subject_digest)))
        found = logic.find_samples(session, api.ctx, tenant, "train", subject="user-2")
    assert len(digests) == 7 and all(d is not None and len(d) == 64 for d in digests)
    assert not any("user" in (d or "") for d in digests)
    assert found.sample_ids == ("s1", "s8")


def test_read_samples_reads_only_the_shards_that_hold_them(api: ApiClient, reads: list[str]) -> None:
    create(api)
    upload(api, upload_bytes(40))
    inputs, labels = features(40)
    version = version_row(api)
    keys = shard_keys(api, version.id)

    data = logic.read_samples(api.ctx, version.id, [1033, 1001, 1006, 1033])
    assert sorted(reads) == sorted([keys[0], keys[4]])  # each needed shard once, no other
    assert torch.equal(data["inputs"], inputs[[33, 1, 6]])
    assert torch.equal(data["labels"], labels[[33, 1, 6]])

    reads.clear()
    empty = logic.read_samples(api.ctx, version.id, [])
    assert reads == [] and empty["inputs"].shape == (0, INPUT_DIM) and empty["labels"].dtype == torch.int64
    with pytest.raises(Problem) as missing:
        logic.read_samples(api.ctx, version.id, [1001, 7])
    assert missing.value.status == 422 and missing.value.extra["missing_sample_ids"] == [7]


def test_erase_samples_rewrites_only_the_affected_shards(api: ApiClient, reads: list[str]) -> None:
    create(api)
    upload(api, upload_bytes(40))
    inputs, labels = features(40)
    tenant = tenant_id(api)
    source = version_row(api)
    before = shard_keys(api, source.id)
    # samples 9 and 12 (shard 1), 33 (shard 4); shard 1 keeps 6 samples
    erase = [1009, 1012, 1033]
    with session_scope(api.ctx.session_factory) as session:
        new = logic.erase_samples(session, api.ctx, source.id, erase, actor="key:test")
        new_id, number = new.id, new.version
    assert sorted(reads) == sorted([before[1], before[4]])
    after = shard_keys(api, new_id)
    assert {s for s in before if after.get(s) == before[s]} == {0, 2, 3}  # reused by key
    assert set(after) == {0, 1, 2, 3, 4} and after[1] != before[1] and after[4] != before[4]

    body = api.get(f"/v1/datasets/train/versions/{number}").json()
    assert body["source"] == "erasure" and body["parent_version"] == 1 and body["n_samples"] == 37
    with session_scope(api.ctx.session_factory) as session:
        rows = session.execute(
            select(DatasetShard.shard, DatasetShard.size_bytes).where(
                DatasetShard.dataset_version_id == new_id
            )
        )
        sizes = {shard: size for shard, size in rows}
    assert body["erasure"] == {
        "erased_samples": 3,
        "shards_rewritten": 2,
        "bytes_rewritten": sizes[1] + sizes[4],
    }
    assert api.get("/v1/datasets/train/versions/1").json()["status"] == "retired"
    assert api.get("/v1/datasets/train").json()["latest_version"] == 2

    # The new version's index: the erased ids are gone, the others read back unchanged.
    kept = [i for i in range(40) if 1000 + i not in erase]
    data = logic.read_samples(api.ctx, new_id, [1000 + i for i in kept])
    assert torch.equal(data["inputs"], inputs[kept]) and torch.equal(data["labels"], labels[kept])
    with pytest.raises(Problem) as missing:
        logic.read_samples(api.ctx, new_id, [1012])
    assert missing.value.status == 422
    with session_scope(api.ctx.session_factory) as session:
        subject_6 = logic.find_samples(session, api.ctx, tenant, "train", subject=6)  # had 5, 12, 19, ...
    assert subject_6.version == 2 and 1012 not in subject_6.sample_ids and 1005 in subject_6.sample_ids
    assert body["n_subjects"] == 7

    action, payload = dataset_events(api)[-1]
    assert action == "dataset.samples_erased"
    assert payload["n_samples"] == 3 and len(payload["sample_digests"]) == 3
    assert payload["from_version"] == 1 and payload["version"] == 2 and payload["shards_reused"] == 3

    # The retired source cannot be erased from again (its successor holds the truth).
    with session_scope(api.ctx.session_factory) as session, pytest.raises(Problem) as retired:
        logic.erase_samples(session, api.ctx, source.id, [1000], actor="key:test")
    assert retired.value.status == 409


def test_erase_in_a_transaction_the_caller_already_opened(api: ApiClient) -> None:
    """An erasure job may call it mid-transaction: on SQLite a second transaction would wait on
    the caller's write lock, so the caller's own is used."""
    create(api)
    upload(api, upload_bytes(20))
    source = version_row(api)
    started = time.perf_counter()
    with session_scope(api.ctx.session_factory) as session:
        session.execute(select(Tenant.id)).all()  # the caller's transaction is open
        new = logic.erase_samples(session, api.ctx, source.id, [1003], actor="t")
    assert new.n_samples == 19 and time.perf_counter() - started < 10


def test_erasing_a_whole_shard_drops_it(api: ApiClient) -> None:
    create(api)
    upload(api, upload_bytes(20))  # shards of 8, 8, 4
    source = version_row(api)
    with session_scope(api.ctx.session_factory) as session:
        new = logic.erase_samples(session, api.ctx, source.id, list(range(1016, 1020)), actor="t")
        new_id = new.id
    assert set(shard_keys(api, new_id)) == {0, 1}
    assert new.n_samples == 16 and new.shards_rewritten == 0 and new.bytes_rewritten == 0
    batches = list(logic.iter_retain_batches(api.ctx, new_id, [], batch_size=100))
    assert [len(b["labels"]) for b in batches] == [16]


def test_retain_batches_and_sample_exclude_erased_ids(api: ApiClient, reads: list[str]) -> None:
    create(api)
    upload(api, upload_bytes(40))
    inputs, _ = features(40)
    version = version_row(api)
    exclude = [1000 + i for i in (0, 1, 2, 3, 4, 5, 6, 7, 20)] + [777]  # all of shard 0, and an unknown id
    kept = [i for i in range(40) if i not in (0, 1, 2, 3, 4, 5, 6, 7, 20)]

    batches = list(logic.iter_retain_batches(api.ctx, version.id, exclude, batch_size=12))
    assert [len(b["labels"]) for b in batches] == [12, 12, 7]
    assert torch.equal(torch.cat([b["inputs"] for b in batches]), inputs[kept])
    assert shard_keys(api, version.id)[0] not in reads  # a shard with nothing left is not read

    reads.clear()
    subset = logic.retain_sample(api.ctx, version.id, exclude, max_samples=5, seed=7)
    assert len(subset["labels"]) == 5
    rows = [int((inputs == row).all(dim=1).nonzero()[0]) for row in subset["inputs"]]
    assert set(rows) <= set(kept) and rows == sorted(rows)
    assert len(reads) <= 5
    again = logic.retain_sample(api.ctx, version.id, exclude, max_samples=5, seed=7)
    assert torch.equal(again["inputs"], subset["inputs"])
    other = logic.retain_sample(api.ctx, version.id, exclude, max_samples=5, seed=8)
    assert not torch.equal(other["inputs"], subset["inputs"])
    everything = logic.retain_sample(api.ctx, version.id, exclude, max_samples=1000, seed=1)
    assert torch.equal(everything["inputs"], inputs[kept])


def test_retain_sample_is_bounded_by_the_setting(make_api: Any) -> None:
    bounded = make_api(dataset_retain_max_samples=4, dataset_shard_samples=SHARD)
    create(bounded)
    upload(bounded, upload_bytes(40))
    subset = logic.retain_sample(bounded.ctx, version_row(bounded).id, [], max_samples=100, seed=0)
    assert len(subset["labels"]) == 4


def test_purge_and_delete_unreferenced_shards(api: ApiClient) -> None:
    create(api)
    upload(api, upload_bytes(40))
    source = version_row(api)
    before = shard_keys(api, source.id)
    with session_scope(api.ctx.session_factory) as session:
        new_id = logic.erase_samples(session, api.ctx, source.id, [1001, 1030], actor="t").id
    # Nothing is deleted while a version (the retired one too) lists the blobs.
    assert logic.delete_unreferenced_shards(api.ctx, before.values()) == []
    with session_scope(api.ctx.session_factory) as session, pytest.raises(Problem) as ready:
        logic.purge_version(session, new_id, actor="t")
    assert ready.value.status == 409

    with session_scope(api.ctx.session_factory) as session:
        keys = logic.purge_version(session, source.id, actor="t")
    assert sorted(keys) == sorted(before.values())
    deleted = logic.delete_unreferenced_shards(api.ctx, keys)
    assert sorted(deleted) == sorted([before[0], before[3]])  # the two rewritten; the rest are reused
    assert sorted(stored_shards(api)) == sorted(shard_keys(api, new_id).values())
    assert api.get("/v1/datasets/train/versions/1").json()["status"] == "purged"

    with pytest.raises(Problem) as purged:
        logic.read_samples(api.ctx, source.id, [1002])
    assert purged.value.status == 410
    tenant = tenant_id(api)
    with session_scope(api.ctx.session_factory) as session, pytest.raises(Problem) as gone:
        logic.find_samples(session, api.ctx, tenant, "train", sample_ids=[1002], version=1)
    assert gone.value.status == 410
    assert len(logic.read_samples(api.ctx, new_id, [1002, 1039])["labels"]) == 2
    assert [a for a, _ in dataset_events(api)][-2:] == ["dataset.samples_erased", "dataset.version_purged"]


def test_npz_member_streams_match_a_whole_load(api: ApiClient) -> None:
    """A compressed .npz is inflated chunk by chunk; the shards hold what np.load would give."""
    inputs, labels = features(30)
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=inputs.numpy(), labels=labels.numpy(), sample_ids=np.arange(30))
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
    create(api)
    upload(api, buf.getvalue(), filename="d.npz")
    batches = list(logic.iter_retain_batches(api.ctx, version_row(api).id, [], batch_size=30))
    assert torch.equal(batches[0]["inputs"], inputs) and torch.equal(batches[0]["labels"], labels)
