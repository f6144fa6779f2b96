"""Serving a stored artifact over HTTP: validators (ETag, Repr-Digest), conditional requests
(If-None-Match, If-Range) and single byte ranges (RFC 9110)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from starlette.responses import Response, StreamingResponse

from service.errors import Problem
from service.storage import ArtifactStore

_CHUNK = 1024 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")

# A numbered version never changes: caches may keep it, but private (they must not serve one
# caller's download to another, who may lack the rights).
IMMUTABLE = "private, max-age=31536000, immutable"
# An alias such as "latest" moves to each new version: caches must revalidate (ETag) every time.
REVALIDATE = "private, no-cache"


def etag_for(sha256: str) -> str:
    return f'"{sha256}"'


def repr_digest(sha256: str) -> str:
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    if header.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range as [start, end] inclusive; None means "ignore the header, send it all"
    (malformed or multi-range: RFC 9110 lets a server ignore Range). Raises 416 if unsatisfiable."""
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        start, end = max(size - suffix, 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None  # syntactically invalid: ignore
    if start >= size or size == 0:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> Problem:
    return Problem(
        416,
        "Range Not Satisfiable",
        f"the requested range lies outside the {size}-byte representation",
        headers={"Content-Range": f"bytes */{size}"},
    )


def _stream(store: ArtifactStore, key: str, start: int, end: int) -> Iterator[bytes]:
    with store.open(key) as f:
        f.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def artifact_response(
    *,
    store: ArtifactStore,
    key: str,
    sha256: str,
    size: int,
    filename: str,
    method: str,
    if_none_match: str | None,
    range_header: str | None,
    if_range: str | None,
    immutable: bool = True,
) -> tuple[Response, tuple[int, int] | None]:
    """The response, and the byte range sent (None for a 304 or a HEAD). ``immutable=False`` for
    a representation that a later request to the same URL may not get (an alias like latest)."""
    etag = etag_for(sha256)
    headers = {
        "ETag": etag,
        "Repr-Digest": repr_digest(sha256),
        "Accept-Ranges": "bytes",
        "Cache-Control": IMMUTABLE if immutable else REVALIDATE,
    }
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers), None

    byte_range: tuple[int, int] | None = None
    # If-Range: send the range only while the representation is still the one the client has.
    if range_header and (if_range is None or if_range.strip() == etag):
        byte_range = parse_range(range_header, size)

    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if byte_range is None:
        status, start, end = 200, 0, size - 1
    else:
        status, (start, end) = 206, byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(end - start + 1, 0))
    media_type = "application/octet-stream"
    if method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type), None
    body = _stream(store, key, start, end) if size > 0 else iter([b""])
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type), (start, end)
