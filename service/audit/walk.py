"""Walking a chain: recompute each event's hash in seq order and stop at the first that fails."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.hashing import GENESIS_HASH, hash_of
from service.tables import AuditEvent

_PAGE = 1000


@dataclass
class Walk:
    """How far a chain checks out: ``seq``/``hash`` of the last good event, or where it broke."""

    seq: int
    hash: str
    bad_seq: int | None = None
    reason: str | None = None


def _iter_events(session: Session, chain: str, after_seq: int, until: int | None) -> Iterator[AuditEvent]:
    last = after_seq
    while True:
        stmt = select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq > last)
        if until is not None:
            stmt = stmt.where(AuditEvent.seq <= until)
        page = session.scalars(stmt.order_by(AuditEvent.seq).limit(_PAGE)).all()
        if not page:
            return
        yield from page
        last = page[-1].seq
        # Pages are read once; drop them so a long chain does not pile up in the identity map.
        for event in page:
            session.expunge(event)


def walk(
    session: Session,
    chain: str,
    *,
    after_seq: int = 0,
    after_hash: str = GENESIS_HASH,
    until: int | None = None,
) -> Walk:
    """Check the events after ``after_seq`` (whose hash is ``after_hash``), up to ``until``."""
    prev, expected = after_hash, after_seq + 1
    for event in _iter_events(session, chain, after_seq, until):
        if event.seq != expected:
            # A gap: the event at expected was removed (or the rows were renumbered).
            return Walk(expected - 1, prev, expected, f"event {expected} is missing")
        if event.prev_hash != prev:
            return Walk(expected - 1, prev, event.seq, "prev_hash does not match the previous event's hash")
        if hash_of(event, prev) != event.hash:
            return Walk(expected - 1, prev, event.seq, "stored hash does not match the event's content")
        prev = event.hash
        expected += 1
    return Walk(expected - 1, prev)
