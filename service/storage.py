"""Content-addressed artifact storage over fsspec (local directory, ``s3://``, ``memory://`` ...).

Keys are ``{kind}/{sha[:2]}/{sha}``: the same bytes always land on the same key, so a put is
idempotent and a stored object can never change under a reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

_CHUNK = 1024 * 1024


def _transient(exc: BaseException) -> bool:
    # Object stores fail now and then (timeouts, resets, 5xx surfaced as OSError); a missing or
    # forbidden object is an answer, not a hiccup, so it is not retried.
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | ValueError):
        return False
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


# Every call that reaches the store is retried a few times with backoff on transient errors:
# content-addressed puts are idempotent, so a retried write can never corrupt an object.
_retrying = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.2, max=5),
    reraise=True,
)


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int


def content_key(kind: str, sha256: str) -> str:
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"invalid artifact kind {kind!r}")
    return f"{kind}/{sha256[:2]}/{sha256}"


class ArtifactStore:
    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        # Keys come from our own database, but never let one climb out of the root.
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid artifact key {key!r}")
        return f"{self.root}/{key}"

    # -- writing -----------------------------------------------------------------------------

    @_retrying
    def put_bytes(self, data: bytes, *, kind: str) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        key = content_key(kind, sha)
        path = self._path(key)
        if not self.exists(key):
            if self.is_local:
                self._atomic_local_write(path, lambda f: f.write(data))
            else:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(path, data)
        return StoredObject(key=key, sha256=sha, size=len(data))

    @_retrying
    def put_file(self, path: str | os.PathLike[str], *, kind: str) -> StoredObject:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as src:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        key = content_key(kind, sha)
        target = self._path(key)
        if not self.exists(key):
            if self.is_local:

                def copy(f: IO[bytes]) -> None:
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, f, _CHUNK)

                self._atomic_local_write(target, copy)
            else:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(os.fspath(path), target)
        return StoredObject(key=key, sha256=sha, size=size)

    def _atomic_local_write(self, path: str, write: Any) -> None:
        # Temp file in the same directory + rename: readers see the whole object or none.
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{uuid.uuid4().hex[:8]}-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- reading -----------------------------------------------------------------------------

    @_retrying
    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def open(self, key: str) -> IO[bytes]:
        return self.fs.open(self._path(key), "rb")

    @_retrying
    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object."""
        return self.fs.cat_file(self._path(key), start=start, end=end)

    @_retrying
    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    @_retrying
    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def local_path(self, key: str) -> str | None:
        """The file's path when the store is a local directory (lets a worker skip a copy)."""
        return self._path(key) if self.is_local else None

    @_retrying
    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def keys(self, kind: str | None = None) -> list[str]:
        """Every stored key (under one kind if given); for tests and maintenance."""
        base = self.root if kind is None else f"{self.root}/{kind}"
        if not self.fs.exists(base):
            return []
        found = self.fs.find(base)
        # Some filesystems answer without the leading "/" the root has (or the reverse).
        root = self.root.strip("/") + "/"
        out = []
        for found_path in found:
            rel = found_path.strip("/")
            rel = rel[len(root) :] if rel.startswith(root) else rel
            if not rel.rsplit("/", 1)[-1].startswith(".tmp-"):
                out.append(rel)
        return sorted(out)
