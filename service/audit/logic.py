"""Appending to the hash-chained audit log: one chain per tenant, plus a system chain.

Each event's hash is sha256(prev_hash ‖ canonical JSON of the event) (service.audit.hashing), so
editing, deleting or reordering a stored row breaks its chain. Every tenant has a chain of its
own (events without a tenant go to the "system" chain): seq counts within the chain, so a tenant
learns nothing about another tenant's activity from its own seq numbers or head hash.

Appends are serialised per chain through the chain's ``audit_heads`` row (a row lock on
PostgreSQL; on SQLite every transaction holds the write lock from BEGIN IMMEDIATE), so a chain can
never fork, while appends to different tenants' chains do not wait for each other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.audit.hashing import GENESIS_HASH, hash_of, normalise_payload
from service.db import flush_deferred, utcnow
from service.tables import AuditEvent, AuditHead
from service.webhooks.enqueue import enqueue_deliveries

SYSTEM_CHAIN = "system"  # tenant ids are "ten_…", so this key never names a tenant's chain


def chain_of(tenant_id: str | None) -> str:
    """The chain an event of this tenant belongs to."""
    return tenant_id if tenant_id is not None else SYSTEM_CHAIN


def _ensure_head_row(session: Session, chain: str) -> None:
    # A tenant's head row is made by its first append; "do nothing on conflict" lets two first
    # appends race safely (on PostgreSQL the second waits for the first to commit, then locks it).
    dialect = session.get_bind().dialect.name
    values = {"chain": chain, "seq": 0, "hash": GENESIS_HASH}
    if dialect == "postgresql":
        session.execute(postgresql.insert(AuditHead).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(AuditHead).values(**values).on_conflict_do_nothing())
    elif session.get(AuditHead, chain) is None:
        session.execute(insert(AuditHead).values(**values))


_LOCKED_HEADS = "audit_heads_locked"


def _lock_head(session: Session, chain: str) -> AuditHead:
    # A transaction that appends many events (a group commit of intakes) locks the head once: the
    # row stays locked, and the object current, until that transaction (or savepoint) ends.
    session.connection()  # begin now, so that the transaction below is the one holding the lock
    tx = session.get_nested_transaction() or session.get_transaction()
    held: tuple[object, dict[str, AuditHead]] | None = session.info.get(_LOCKED_HEADS)
    if held is not None and held[0] is tx and chain in held[1]:
        return held[1][chain]
    stmt = select(AuditHead).where(AuditHead.chain == chain).with_for_update()
    head = session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()
    if head is None:
        _ensure_head_row(session, chain)
        head = session.scalars(stmt.execution_options(populate_existing=True)).one()
    if held is None or held[0] is not tx:
        held = (tx, {})
        session.info[_LOCKED_HEADS] = held
    held[1][chain] = head
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
    """Append one event to its tenant's chain in the caller's transaction (it commits or rolls
    back with the caller's state change, so the log never records something that did not happen)."""
    chain = chain_of(tenant_id)
    head = _lock_head(session, chain)
    event = AuditEvent(
        chain=chain,
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
    # The same function verification recomputes with, so the two can never disagree on the fields.
    event.hash = hash_of(event, head.hash)
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    if not flush_deferred(session):  # a group commit sends its batch's events in one flush
        session.flush()
    # Webhooks announcing this change are outbox rows of the same transaction (at least once).
    enqueue_deliveries(session, event)
    return event
