"""Idempotency keys for POST endpoints (the ``Idempotency-Key`` header).

A record is keyed per (tenant, key, scope) where scope is "METHOD path". It stores a hash of the
request (method, path and body bytes) and the answer that was sent. A retry with the same key and
the same body gets the stored answer again and creates nothing; the same key with another body is
a client error (422). The record is written in the same transaction as the state it answers for,
so a stored answer always describes something that was committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Problem, unprocessable
from service.tables import IdempotencyRecord

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyContext:
    tenant_id: str
    key: str
    scope: str
    request_hash: str


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    # Length-prefix the parts so that no two different (method, path, body) hash alike.
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def make_context(
    tenant_id: str, key: str | None, method: str, path: str, body: bytes
) -> IdempotencyContext | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise unprocessable(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters")
    return IdempotencyContext(
        tenant_id=tenant_id,
        key=key,
        scope=f"{method.upper()} {path}",
        request_hash=request_hash(method, path, body),
    )


def lookup(session: Session, idem: IdempotencyContext) -> StoredAnswer | None:
    """The stored answer for a replay, None for a new key; 422 if the key was used for another body."""
    record = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == idem.tenant_id,
            IdempotencyRecord.key == idem.key,
            IdempotencyRecord.scope == idem.scope,
        )
    ).one_or_none()
    if record is None:
        return None
    if record.request_hash != idem.request_hash:
        raise Problem(
            422,
            "Unprocessable Content",
            "this Idempotency-Key was already used with a different request body",
            type="urn:unlearn:problem:idempotency-key-reused",
        )
    return StoredAnswer(record.status_code, dict(record.response_body), dict(record.response_headers or {}))


def store(
    session: Session,
    idem: IdempotencyContext,
    status_code: int,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """Record the answer in the caller's transaction. A concurrent request with the same key makes
    the commit fail on the unique constraint; the caller then replays the winner's answer."""
    session.add(
        IdempotencyRecord(
            tenant_id=idem.tenant_id,
            key=idem.key,
            scope=idem.scope,
            request_hash=idem.request_hash,
            status_code=status_code,
            response_body=body,
            response_headers=headers,
        )
    )
