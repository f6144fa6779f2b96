"""one audit chain per tenant; signed chain heads

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00

The single global audit chain becomes one chain per tenant (events without a tenant form the
"system" chain): ``audit_events`` gains ``chain`` and its primary key becomes (chain, seq), seq
counting within the chain; ``audit_head`` (one row) becomes ``audit_heads`` (one row per chain).
Existing events are re-chained in their original order: per chain, seq 1, 2, ... and prev_hash /
hash recomputed with the unchanged recipe. Re-hashing would also hide earlier tampering, so the
old global chain is verified on the way and the result (its length, head hash, and where it broke,
if it did) is recorded in an ``audit.rechained`` event appended to the system chain.

``audit_checkpoints`` holds signed chain heads (service/audit/checkpoints.py).

The downgrade merges the chains back into one global chain ordered by time (ts, then chain and
seq), which is the original order: appends were serialised and stamped under the head lock.

Works on SQLite (batch mode rebuilds the table) and PostgreSQL. Rows are processed in pages, and
the hashing recipe is copied here rather than imported, so that this migration keeps producing
the same hashes whatever later becomes of the service code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM_CHAIN = "system"
GENESIS_HASH = "0" * 64
PAGE = 1000


# --- the hashing recipe (service/audit/hashing.py), frozen ---------------------------------


def _ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _hash(prev_hash: str, seq: int, row: Any) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "ts": _ts(row.ts),
            "tenant_id": row.tenant_id,
            "actor": row.actor,
            "action": row.action,
            "model": row.model,
            "object_id": row.object_id,
            "payload": row.payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256((prev_hash + body).encode("ascii")).hexdigest()


def _events(*extra: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(
        "audit_events",
        sa.column("seq", sa.Integer()),
        sa.column("ts", service.db.UTCDateTime()),
        sa.column("tenant_id", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("action", sa.String()),
        sa.column("model", sa.String()),
        sa.column("object_id", sa.String()),
        sa.column("payload", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
        *extra,
    )


# --- upgrade ---------------------------------------------------------------------------------


def _rechain(conn: sa.Connection) -> tuple[dict[str, tuple[int, str]], dict[str, Any]]:
    """Fill chain/new_seq/new_prev_hash/new_hash in the old global order, verifying the old chain.

    Returns each chain's (length, head hash) and what the old chain's verification found.
    """
    t = _events(
        sa.column("chain", sa.String()),
        sa.column("new_seq", sa.Integer()),
        sa.column("new_prev_hash", sa.String()),
        sa.column("new_hash", sa.String()),
    )
    update = (
        t.update()
        .where(t.c.seq == sa.bindparam("b_old_seq"))
        .values(
            chain=sa.bindparam("b_chain"),
            new_seq=sa.bindparam("b_seq"),
            new_prev_hash=sa.bindparam("b_prev"),
            new_hash=sa.bindparam("b_hash"),
        )
    )
    heads: dict[str, tuple[int, str]] = {}
    old = {"length": 0, "head_hash": GENESIS_HASH, "ok": True, "first_bad_seq": None, "reason": None}
    old_prev, expected, last = GENESIS_HASH, 1, 0

    def broken(seq: int, reason: str) -> None:
        if old["ok"]:
            old.update(ok=False, first_bad_seq=seq, reason=reason)

    while True:
        rows = conn.execute(sa.select(t).where(t.c.seq > last).order_by(t.c.seq).limit(PAGE)).all()
        if not rows:
            break
        params = []
        for row in rows:
            if row.seq != expected:
                broken(expected, f"event {expected} is missing")
            elif row.prev_hash != old_prev or _hash(old_prev, row.seq, row) != row.hash:
                broken(row.seq, "the event does not match its hash or its predecessor's")
            old_prev, expected = row.hash, row.seq + 1
            chain = row.tenant_id if row.tenant_id is not None else SYSTEM_CHAIN
            seq, prev = heads.get(chain, (0, GENESIS_HASH))
            new_hash = _hash(prev, seq + 1, row)
            heads[chain] = (seq + 1, new_hash)
            params.append(
                {"b_old_seq": row.seq, "b_chain": chain, "b_seq": seq + 1, "b_prev": prev, "b_hash": new_hash}
            )
        conn.execute(update, params)
        last = rows[-1].seq
    old["length"], old["head_hash"] = last, old_prev
    head = conn.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).first()
    if head is not None and (head.seq, head.hash) != (last, old_prev):
        broken(min(head.seq, last) + 1, f"the head recorded {head.seq} events, {last} were found")
    return heads, old


def _append_rechained_event(
    conn: sa.Connection, heads: dict[str, tuple[int, str]], old: dict[str, Any]
) -> None:
    """Provenance: which global chain the per-tenant chains were made from."""
    t = _events(sa.column("chain", sa.String()))
    seq, prev = heads.get(SYSTEM_CHAIN, (0, GENESIS_HASH))
    values = {
        "chain": SYSTEM_CHAIN,
        "seq": seq + 1,
        "ts": datetime.now(UTC),
        "tenant_id": None,
        "actor": "system:migration",
        "action": "audit.rechained",
        "model": None,
        "object_id": revision,
        "payload": {"global_chain": old, "chains": len(heads)},
        "prev_hash": prev,
    }
    values["hash"] = _hash(prev, seq + 1, _Values(values))
    conn.execute(t.insert().values(**values))
    heads[SYSTEM_CHAIN] = (seq + 1, values["hash"])


class _Values:
    """Attribute access to a dict, so _hash reads it like a row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def upgrade() -> None:
    audit_heads = op.create_table(
        "audit_heads",
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_heads")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index("ix_audit_checkpoints_chain_seq", ["chain", "seq"], unique=False)

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("new_seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("new_prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("new_hash", sa.String(length=64), nullable=True))

    conn = op.get_bind()
    heads, old = _rechain(conn)

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_events_hash", type_="unique")
        batch_op.drop_constraint("pk_audit_events", type_="primary")
        batch_op.drop_column("seq")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("hash")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("chain", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("new_seq", new_column_name="seq", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column(
            "new_prev_hash", new_column_name="prev_hash", existing_type=sa.String(length=64), nullable=False
        )
        batch_op.alter_column(
            "new_hash", new_column_name="hash", existing_type=sa.String(length=64), nullable=False
        )
    # Constraints on renamed columns in a batch of their own: SQLite's batch rebuild drops them
    # when they are declared in the batch that renames the columns.
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_primary_key("pk_audit_events", ["chain", "seq"])
        batch_op.create_unique_constraint("uq_audit_events_hash", ["hash"])

    if old["length"] > 0:
        _append_rechained_event(conn, heads, old)
    heads.setdefault(SYSTEM_CHAIN, (0, GENESIS_HASH))
    op.bulk_insert(audit_heads, [{"chain": c, "seq": s, "hash": h} for c, (s, h) in sorted(heads.items())])
    op.drop_table("audit_head")


# --- downgrade -------------------------------------------------------------------------------


def _merge(conn: sa.Connection) -> tuple[int, str]:
    """Fill old_seq/old_prev_hash/old_hash: one global chain in time order. Returns its head."""
    t = _events(
        sa.column("chain", sa.String()),
        sa.column("old_seq", sa.Integer()),
        sa.column("old_prev_hash", sa.String()),
        sa.column("old_hash", sa.String()),
    )
    update = (
        t.update()
        .where(t.c.chain == sa.bindparam("b_chain"), t.c.seq == sa.bindparam("b_seq"))
        .values(
            old_seq=sa.bindparam("b_old_seq"),
            old_prev_hash=sa.bindparam("b_prev"),
            old_hash=sa.bindparam("b_hash"),
        )
    )
    seq, prev = 0, GENESIS_HASH
    after: tuple[datetime, str, int] | None = None
    while True:
        stmt = sa.select(t)
        if after is not None:
            ts = sa.literal(after[0], service.db.UTCDateTime())
            stmt = stmt.where(
                sa.or_(
                    t.c.ts > ts,
                    sa.and_(
                        t.c.ts == ts,
                        sa.or_(t.c.chain > after[1], sa.and_(t.c.chain == after[1], t.c.seq > after[2])),
                    ),
                )
            )
        rows = conn.execute(stmt.order_by(t.c.ts, t.c.chain, t.c.seq).limit(PAGE)).all()
        if not rows:
            return seq, prev
        params = []
        for row in rows:
            seq += 1
            new_hash = _hash(prev, seq, row)
            params.append(
                {"b_chain": row.chain, "b_seq": row.seq, "b_old_seq": seq, "b_prev": prev, "b_hash": new_hash}
            )
            prev = new_hash
        conn.execute(update, params)
        last = rows[-1]
        after = (last.ts, last.chain, last.seq)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("old_seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("old_prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("old_hash", sa.String(length=64), nullable=True))

    conn = op.get_bind()
    head_seq, head_hash = _merge(conn)

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_events_hash", type_="unique")
        batch_op.drop_constraint("pk_audit_events", type_="primary")
        batch_op.drop_column("seq")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("hash")
        batch_op.drop_column("chain")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("old_seq", new_column_name="seq", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column(
            "old_prev_hash", new_column_name="prev_hash", existing_type=sa.String(length=64), nullable=False
        )
        batch_op.alter_column(
            "old_hash", new_column_name="hash", existing_type=sa.String(length=64), nullable=False
        )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_primary_key("pk_audit_events", ["seq"])
        batch_op.create_unique_constraint("uq_audit_events_hash", ["hash"])

    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(audit_head, [{"id": 1, "seq": head_seq, "hash": head_hash}])
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_checkpoints_chain_seq")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_heads")
