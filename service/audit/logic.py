"""The hash-chained audit log.

Each event's hash is sha256(prev_hash ‖ canonical JSON of the event), so editing, deleting or
reordering a stored row breaks the chain, and ``verify_chain`` says at which seq. Appends are
serialised through the single ``audit_head`` row (row lock on PostgreSQL; SQLite transactions
already hold the write lock from BEGIN IMMEDIATE), so the chain can never fork.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import utcnow
from service.tables import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64
HEAD_ID = 1
_VERIFY_PAGE = 1000


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    # JSON has no NaN/Infinity; a metric that diverged is recorded as null so the stored payload
    # (and so the hash) stays representable on every backend.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def normalise_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload exactly as it will read back from the database (plain JSON types only)."""
    return json.loads(json.dumps(_finite(payload), default=_json_default, allow_nan=False))


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    *,
    prev_hash: str,
    seq: int,
    ts: datetime,
    tenant_id: str | None,
    actor: str,
    action: str,
    model: str | None,
    object_id: str | None,
    payload: dict[str, Any],
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "ts": format_ts(ts),
            "tenant_id": tenant_id,
            "actor": actor,
            "action": action,
            "model": model,
            "object_id": object_id,
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("ascii")).hexdigest()


def hash_of(event: AuditEvent, prev_hash: str) -> str:
    return event_hash(
        prev_hash=prev_hash,
        seq=event.seq,
        ts=event.ts,
        tenant_id=event.tenant_id,
        actor=event.actor,
        action=event.action,
        model=event.model,
        object_id=event.object_id,
        payload=event.payload,
    )


def _ensure_head_row(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    values = {"id": HEAD_ID, "seq": 0, "hash": GENESIS_HASH}
    if dialect == "postgresql":
        session.execute(postgresql.insert(AuditHead).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(AuditHead).values(**values).on_conflict_do_nothing())
    elif session.get(AuditHead, HEAD_ID) is None:
        session.execute(insert(AuditHead).values(**values))


def _lock_head(session: Session) -> AuditHead:
    stmt = select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
    head = session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()
    if head is None:
        _ensure_head_row(session)
        head = session.scalars(stmt.execution_options(populate_existing=True)).one()
    return head


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    tenant_id: str | None = None,
    model: str | None = None,
    object_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it commits or rolls back with the caller's
    state change, so the log never records something that did not happen)."""
    head = _lock_head(session)
    event = AuditEvent(
        seq=head.seq + 1,
        ts=utcnow(),
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        model=model,
        object_id=object_id,
        payload=normalise_payload(payload or {}),
        prev_hash=head.hash,
    )
    # The same function verify_chain recomputes with, so the two can never disagree on the fields.
    event.hash = hash_of(event, head.hash)
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    session.flush()
    return event


class ChainReport(TypedDict):
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None
    reason: str | None


def _iter_events(session: Session) -> Iterator[AuditEvent]:
    last = 0
    while True:
        page = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(_VERIFY_PAGE)
        ).all()
        if not page:
            return
        yield from page
        last = page[-1].seq
        # Pages are read once; drop them so a long chain does not pile up in the identity map.
        for event in page:
            session.expunge(event)


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash in seq order and compare with the stored rows and the head."""
    head = session.get(AuditHead, HEAD_ID, populate_existing=True)
    head_seq = head.seq if head is not None else 0
    head_hash = head.hash if head is not None else GENESIS_HASH

    def bad(seq: int, reason: str, length: int) -> ChainReport:
        return {"ok": False, "length": length, "head_hash": head_hash, "first_bad_seq": seq, "reason": reason}

    prev = GENESIS_HASH
    expected_seq = 1
    length = 0
    for event in _iter_events(session):
        if event.seq != expected_seq:
            # A gap: the event at expected_seq was removed (or the rows were renumbered).
            return bad(expected_seq, f"event {expected_seq} is missing", length)
        if event.prev_hash != prev:
            return bad(event.seq, "prev_hash does not match the previous event's hash", length)
        if hash_of(event, prev) != event.hash:
            return bad(event.seq, "stored hash does not match the event's content", length)
        prev = event.hash
        expected_seq += 1
        length += 1

    if head_seq != length or head_hash != prev:
        if head_seq > length:
            return bad(length + 1, f"the head records {head_seq} events but only {length} remain", length)
        if head_seq < length:
            return bad(head_seq + 1, f"events after seq {head_seq} are not recorded in the head", length)
        return bad(max(length, 1), "the chain head does not match the last event", length)
    return {"ok": True, "length": length, "head_hash": head_hash, "first_bad_seq": None, "reason": None}


def chain_length(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
