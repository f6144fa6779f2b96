"""Downloading a checkpoint: checked against the announced sha256, resumed with ``Range`` after a
broken connection, and continued from an earlier run's partial file.

A HEAD request first learns the size, the sha256 (ETag / Repr-Digest) and, for an alias such as
``latest``, the numbered version it stands for; the bytes then come from the numbered version's
URL, whose content never changes, and every resumed range carries ``If-Range`` with the ETag (if
the representation were another, the server sends it whole). Bytes go to
``<name>.<sha256 prefix>.part`` beside the target, which is renamed into place only once the
digest matches: a partial or corrupt file never carries the final name, and a later call for the
same checkpoint resumes where an interrupted one stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, open_stream
from unlearn_client.errors import DigestMismatch, TransportFailure
from unlearn_client.flow import Close, Flow, Read, Sleep, Stream
from unlearn_client.models import CheckpointInfo
from unlearn_client.ops.versions import VersionRef, checkpoint_info
from unlearn_client.progress import ByteProgress, ByteReporter, byte_reporter

_NUMBERED = re.compile(r"/versions/(\d+)/checkpoint$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size_bytes: int
    version: VersionRef
    # How often the transfer went on from bytes already on disk (after a break, or an earlier run).
    resumed: int


class _Partial:
    """The ``.part`` file and the running sha256 of what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        if path.exists():
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.hasher.update(block)
                    self.size += len(block)
        self._file: IO[bytes] = path.open("ab")

    def restart(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        # Plain blocking writes, in the async client too: one chunk at a time is short.
        self._file.write(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        self._file.close()


def _target(dest: str | os.PathLike[str], info: CheckpointInfo, model: str, version: VersionRef) -> Path:
    path = Path(dest)
    if path.is_dir() or str(dest).endswith(os.sep):
        return path / (info.filename or f"{model}-v{version}.safetensors")
    return path


def _range_start(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match((header or "").strip())
    return int(match.group(1)) if match else None


def _receive(stream: Stream, part: _Partial, expected_size: int, reporter: ByteReporter) -> Flow[None]:
    """Append the stream's body to ``part``. A body that ends short of the expected size is a
    broken transfer (raised as such)."""
    while True:
        chunk: bytes = yield Read(stream)
        if not chunk:
            break
        part.write(chunk)
        reporter.update(part.size, expected_size)
    if part.size < expected_size:
        raise httpx.RemoteProtocolError(f"the body ended at byte {part.size} of {expected_size}")


def _fetch_into(
    options: Options, request: api.Call[None], part: _Partial, info: CheckpointInfo, reporter: ByteReporter
) -> Flow[int]:
    """Download the rest of the checkpoint into ``part``, resuming after breaks; how often it resumed."""
    resumed = 1 if part.size else 0
    streak = 0  # broken connections in a row that brought no byte
    while part.size < info.size_bytes:
        headers = {"Accept-Encoding": "identity"}  # byte ranges count bytes of the file itself
        if part.size:
            headers.update({"Range": f"bytes={part.size}-", "If-Range": info.etag})
        spec = dataclasses.replace(request.spec, headers=headers)
        stream = yield from open_stream(options, spec)
        if stream.response.status_code == 206:
            if _range_start(stream.response.headers.get("content-range")) != part.size:
                yield Close(stream)
                part.restart()  # not the range asked for: start over rather than guess
                continue
        elif part.size:
            part.restart()  # a 200 is the whole file (If-Range did not match, or no Range support)
        before = part.size
        try:
            yield from _receive(stream, part, info.size_bytes, reporter)
        except httpx.TransportError as exc:
            streak = 0 if part.size > before else streak + 1
            delay = options.retry.after_error(exc, streak, replay_safe=True)
            yield Close(stream)
            if delay is None:
                raise TransportFailure(str(exc), method="GET", url=spec.path) from exc
            yield Sleep(delay)
            resumed += 1
            continue
        yield Close(stream)
    return resumed


def download(
    options: Options,
    model: str,
    version: VersionRef = "latest",
    dest: str | os.PathLike[str] = ".",
    *,
    progress: ByteProgress = False,
) -> Flow[Downloaded]:
    """Download a version's checkpoint to ``dest`` (a file, or a folder for the server's file
    name), check its sha256 and return where it is. Raises DigestMismatch (and keeps no file) if
    the bytes are not the ones announced."""
    info = yield from checkpoint_info(options, model, version)
    numbered = _NUMBERED.search(info.content_location or "")
    pinned: VersionRef = int(numbered.group(1)) if numbered else version
    target = _target(dest, info, model, pinned)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _Partial(target.with_name(f"{target.name}.{info.sha256[:16]}.part"))
    if part.size > info.size_bytes:
        part.restart()
    reporter = byte_reporter(progress, target.name)
    try:
        request = api.DOWNLOAD_CHECKPOINT.request({"name": model, "v": pinned})
        resumed = yield from _fetch_into(options, request, part, info, reporter)
    finally:
        part.close()
        reporter.close()
        if part.size == 0:
            part.path.unlink(missing_ok=True)  # nothing to resume from: leave no empty file
    actual = part.hasher.hexdigest()
    if actual != info.sha256:
        part.path.unlink(missing_ok=True)
        raise DigestMismatch(info.sha256, actual, request.spec.path)
    os.replace(part.path, target)
    return Downloaded(target, actual, part.size, pinned, resumed)
