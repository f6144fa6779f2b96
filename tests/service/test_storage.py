"""Content-addressed artifact storage on a local folder and on an fsspec memory filesystem."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from service.storage import ArtifactStore
from tests.service_fixtures import ApiClient


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return ArtifactStore(f"memory://artifacts-{uuid.uuid4().hex}")
    return ArtifactStore(str(tmp_path / "store"))


def test_put_is_content_addressed_and_idempotent(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"hello world" * 1000
    sha = hashlib.sha256(data).hexdigest()
    obj = store.put_bytes(data, kind="checkpoints")
    assert obj.key == f"checkpoints/{sha[:2]}/{sha}" and obj.sha256 == sha and obj.size == len(data)
    assert store.put_bytes(data, kind="checkpoints") == obj
    assert store.keys() == [obj.key]
    assert store.exists(obj.key) and store.size(obj.key) == len(data)
    assert store.read_bytes(obj.key) == data
    assert store.read_range(obj.key, 5, 16) == data[5:16]
    with store.open(obj.key) as f:
        f.seek(100)
        assert f.read(10) == data[100:110]

    path = tmp_path / "blob.bin"
    path.write_bytes(b"from a file")
    from_file = store.put_file(path, kind="datasets")
    assert from_file.sha256 == hashlib.sha256(b"from a file").hexdigest()
    assert store.read_bytes(from_file.key) == b"from a file"
    assert store.keys("datasets") == [from_file.key]

    store.delete(obj.key)
    assert not store.exists(obj.key)
    store.delete(obj.key)  # deleting a missing object is not an error


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "s"))
    obj = store.put_bytes(b"x" * 10, kind="checkpoints")
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "s").as_posix() for p in files] == [obj.key]


def test_keys_cannot_escape_the_root(store: ArtifactStore) -> None:
    for key in ("../etc/passwd", "a//b", "", "a/./b"):
        with pytest.raises(ValueError):
            store.read_bytes(key)
    with pytest.raises(ValueError):
        store.put_bytes(b"x", kind="../up")


def test_api_on_memory_storage(make_api: Callable[..., ApiClient], mlp_checkpoint: bytes) -> None:
    client = make_api(storage_url=f"memory://api-{uuid.uuid4().hex}")
    client.create_model("m")
    assert client.upload_version("m", mlp_checkpoint).status_code == 201
    r = client.get("/v1/models/m/versions/1/checkpoint", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == mlp_checkpoint[:100]
    assert client.get("/readyz").status_code == 200


class FlakyMemoryFileSystem(MemoryFileSystem):
    """An object store whose first calls time out, as a real one sometimes does."""

    protocol = "flakymem"
    failures_left = 0

    def _maybe_fail(self) -> None:
        if FlakyMemoryFileSystem.failures_left > 0:
            FlakyMemoryFileSystem.failures_left -= 1
            raise TimeoutError("simulated object-store timeout")

    def pipe_file(self, path: str, value: bytes, *args: object, **kwargs: object) -> None:
        self._maybe_fail()
        super().pipe_file(path, value, *args, **kwargs)

    def cat_file(self, path: str, *args: object, **kwargs: object) -> bytes:
        self._maybe_fail()
        return super().cat_file(path, *args, **kwargs)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries without the real waits between them (they add seconds, not coverage); the waits
    asked for are recorded."""
    import tenacity.nap

    waits: list[float] = []
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=waits.append))
    return waits


def test_transient_store_errors_are_retried_and_missing_objects_are_not(no_backoff: list[float]) -> None:
    fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)
    store = ArtifactStore(f"flakymem://retry-{uuid.uuid4().hex}")
    FlakyMemoryFileSystem.failures_left = 2
    obj = store.put_bytes(b"payload", kind="checkpoints")
    assert FlakyMemoryFileSystem.failures_left == 0
    FlakyMemoryFileSystem.failures_left = 1
    assert store.read_bytes(obj.key) == b"payload"
    FlakyMemoryFileSystem.failures_left = 10  # more than the retry budget: the error surfaces
    with pytest.raises(TimeoutError):
        store.read_bytes(obj.key)
    FlakyMemoryFileSystem.failures_left = 0
    with pytest.raises(FileNotFoundError):
        store.read_bytes("checkpoints/00/" + "0" * 64)
