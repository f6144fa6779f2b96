"""A request described as data (``RequestSpec``), so that one description serves every retry and
both the sync and the async executor build their ``httpx.Request`` from it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

# What an upload may be: a path, the bytes themselves, or an open binary file.
FileInput = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass(frozen=True)
class Upload:
    """One multipart file part. A file object is rewound to where it stood for every attempt, so
    a retried upload sends the same bytes again."""

    source: FileInput
    filename: str
    start: int = 0

    @classmethod
    def of(cls, source: FileInput, default_name: str) -> Upload:
        if isinstance(source, bytes):
            return cls(source, default_name)
        if isinstance(source, str | os.PathLike):
            return cls(source, Path(source).name)
        name = getattr(source, "name", None)
        filename = Path(name).name if isinstance(name, str) else default_name
        return cls(source, filename, source.tell())

    @contextlib.contextmanager
    def opened(self) -> Iterator[tuple[str, bytes | IO[bytes], str]]:
        content_type = "application/octet-stream"
        if isinstance(self.source, bytes):
            yield self.filename, self.source, content_type
        elif isinstance(self.source, str | os.PathLike):
            # Streamed from disk: a checkpoint may be far larger than what is worth holding in memory.
            with open(self.source, "rb") as f:
                yield self.filename, f, content_type
        else:
            self.source.seek(self.start)
            yield self.filename, self.source, content_type


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, Upload] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Whether sending it twice does no harm (GET, or a POST with an Idempotency-Key the server
    # honours): only then is a request retried after a failure that may have reached the server.
    replay_safe: bool = False
    retries: bool = True
    # Seconds for each phase (connect, read...) instead of the client's timeout.
    timeout: float | None = None

    @contextlib.contextmanager
    def build(self, client: httpx.Client | httpx.AsyncClient) -> Iterator[httpx.Request]:
        """The httpx request; files stay open while the caller sends it."""
        with contextlib.ExitStack() as stack:
            files = (
                {name: stack.enter_context(upload.opened()) for name, upload in self.files.items()}
                if self.files
                else None
            )
            yield client.build_request(
                self.method,
                self.path,
                params=dict(self.params) or None,
                json=self.json,
                data=dict(self.data) if self.data is not None else None,
                files=files,
                headers=dict(self.headers),
                timeout=self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
