"""The sha256 a download must have, from what the server announces: ``ETag: "<sha256 hex>"`` and
``Repr-Digest: sha-256=:<base64>:`` (RFC 9530). Both name the whole representation, so a resumed
download is checked against the same digest as a one-piece one."""

from __future__ import annotations

import base64
import binascii
import re

import httpx

from unlearn_client.errors import UnlearnError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_from_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"').lower()
    return value if _HEX64.match(value) else None


def sha256_from_repr_digest(header: str | None) -> str | None:
    """The sha-256 member of a Repr-Digest dictionary (other algorithms are ignored)."""
    if not header:
        return None
    for member in header.split(","):
        name, _, value = member.strip().partition("=")
        if name.strip().lower() != "sha-256":
            continue
        value = value.strip()
        if not (value.startswith(":") and value.endswith(":")):
            return None
        try:
            raw = base64.b64decode(value[1:-1], validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw.hex() if len(raw) == 32 else None
    return None


def announced_sha256(headers: httpx.Headers) -> str:
    """The expected sha256 (hex); an error if none is announced or the two headers disagree."""
    from_digest = sha256_from_repr_digest(headers.get("repr-digest"))
    from_etag = sha256_from_etag(headers.get("etag"))
    if from_digest and from_etag and from_digest != from_etag:
        raise UnlearnError(f"the server's ETag ({from_etag}) and Repr-Digest ({from_digest}) disagree")
    expected = from_digest or from_etag
    if expected is None:
        raise UnlearnError("the server announced no sha256 (ETag or Repr-Digest) to check the download by")
    return expected
