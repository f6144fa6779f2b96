"""One audit chain per tenant: isolation, concurrent appends, the 0002 migration that re-chains a
global log, and signed chain heads (truncation below a signed head is detected)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from unlearn_client.verify import VerificationError, verify_signed_head

from service.audit.checkpoints import (
    latest_checkpoint,
    sign_heads,
    signed_checkpoint,
    start_head_signer_thread,
)
from service.audit.hashing import GENESIS_HASH, event_hash
from service.audit.logic import SYSTEM_CHAIN, append_event
from service.audit.verification import verify_chain
from service.certificates.signing import Signer
from service.db import make_engine, make_session_factory, session_scope
from service.migrate import downgrade, upgrade
from service.tables import AuditCheckpoint, AuditEvent, AuditHead
from tests.service_fixtures import ApiClient


@pytest.fixture
def sessions(fresh_db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(fresh_db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def append(factory: sessionmaker[Session], tenant: str | None, n: int = 1, **extra: Any) -> list[AuditEvent]:
    out = []
    for i in range(n):
        with session_scope(factory) as s:
            out.append(
                append_event(
                    s, actor="tester", action="test.event", tenant_id=tenant, payload={"i": i}, **extra
                )
            )
    return out


def verify(factory: sessionmaker[Session], chain: str, signer: Signer | None = None) -> dict[str, Any]:
    with session_scope(factory) as s:
        return dict(verify_chain(s, chain, signer.public_key if signer else None))


# --- one chain per tenant --------------------------------------------------------------------


def test_each_tenant_has_its_own_chain(sessions: sessionmaker[Session]) -> None:
    for tenant in ["ten_a", "ten_b", "ten_a", None, "ten_b", "ten_a"]:
        append(sessions, tenant)
    with sessions() as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq)).all()
        by_chain: dict[str, list[AuditEvent]] = {}
        for e in rows:
            by_chain.setdefault(e.chain, []).append(e)
    assert {c: [e.seq for e in es] for c, es in by_chain.items()} == {
        "ten_a": [1, 2, 3],
        "ten_b": [1, 2],
        SYSTEM_CHAIN: [1],
    }
    for chain, events in by_chain.items():
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        report = verify(sessions, chain)
        assert report["ok"] and report["length"] == len(events) and report["head_hash"] == events[-1].hash


def test_tampering_in_one_chain_leaves_the_others_valid(sessions: sessionmaker[Session]) -> None:
    append(sessions, "ten_a", 3)
    append(sessions, "ten_b", 3)
    with session_scope(sessions) as s:
        s.execute(
            update(AuditEvent).where(AuditEvent.chain == "ten_a", AuditEvent.seq == 2).values(actor="x")
        )
    assert verify(sessions, "ten_a")["first_bad_seq"] == 2
    assert verify(sessions, "ten_b")["ok"] is True


def test_concurrent_appends_to_several_chains_never_fork(postgres_url: str) -> None:
    """Row locks per chain: 24 threads on three chains (one of them new, so its head row is
    created by racing first appends), each chain gapless and valid."""
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    errors: list[BaseException] = []
    tenants = ["ten_x", "ten_y", None]
    barrier = threading.Barrier(24)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):
                with session_scope(factory) as s:
                    append_event(s, actor=f"w{i}", action="race", tenant_id=tenants[i % 3], payload={"j": j})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        for chain in ["ten_x", "ten_y", SYSTEM_CHAIN]:
            report = verify(factory, chain)
            assert report["ok"] is True and report["length"] == 24, report
            with factory() as s:
                seqs = s.scalars(
                    select(AuditEvent.seq).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
                )
                assert list(seqs) == list(range(1, 25))
    finally:
        engine.dispose()


def test_concurrent_first_appends_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    threads = [threading.Thread(target=append, args=(factory, f"ten_{i % 2}", 3)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify(factory, "ten_0")["length"] == 9 and verify(factory, "ten_0")["ok"]
    assert verify(factory, "ten_1")["length"] == 9 and verify(factory, "ten_1")["ok"]
    engine.dispose()


# --- the API: a tenant sees its own chain only -------------------------------------------------


def _texts(client: ApiClient) -> str:
    return "".join(
        client.get(path).text
        for path in ("/v1/audit", "/v1/audit/verify", "/v1/audit/checkpoints", "/v1/audit/chains")
    )


def test_tenant_b_cannot_learn_tenant_a_chain_length_or_head(api: ApiClient) -> None:
    b = api.with_key(api.new_key(["audit:read", "models:write"], tenant="tenant-b"))
    b.create_model("b-model")

    def b_view() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        report = b.get("/v1/audit/verify").json()
        report.pop("signed_head")  # B's own signed head: the signer may sign it meanwhile
        return report, b.get("/v1/audit").json()["items"]

    before = b_view()
    for i in range(7):
        api.create_model(f"a-{i}")
    with session_scope(api.ctx.session_factory) as s:
        sign_heads(s, api.app.state.signer)
    a = api.get("/v1/audit/verify").json()
    assert a["ok"] and a["length"] == 8  # the bootstrap key and 7 models

    # B's view of the audit log is exactly what it was: A's activity does not show in it.
    assert b_view() == before
    assert before[0]["length"] == 2 and [e["seq"] for e in before[1]] == [1, 2]
    # Nothing B can read names A's chain: not its head hash, nor its chain (tenant) id.
    texts = _texts(b)
    assert a["head_hash"] not in texts and a["chain"] not in texts
    assert b.get("/v1/audit/chains").status_code == 403  # admin only
    signed = b.get("/v1/audit/checkpoints").json()["items"]
    assert {cp["document"]["chain"] for cp in signed} == {before[0]["chain"]}

    # Even an admin of tenant B sees only B's chain in the admin view.
    b_admin = api.with_key(api.new_key(["admin"], tenant="tenant-b"))
    chains = b_admin.get("/v1/audit/chains").json()["items"]
    assert [c["chain"] for c in chains] == [before[0]["chain"]]
    assert a["head_hash"] not in b_admin.get("/v1/audit/chains").text


def test_operator_lists_every_chain_with_its_verification(api: ApiClient) -> None:
    other = api.with_key(api.new_key(["models:write"], tenant="other"))
    other.create_model("o")
    api.create_model("m")
    with session_scope(api.ctx.session_factory) as s:
        append_event(s, actor="system", action="system.event")
    page = api.get("/v1/audit/chains").json()
    chains = {c["tenant"]: c for c in page["items"]}
    assert set(chains) >= {"default", "other", None}
    mine = api.get("/v1/audit/verify").json()
    assert (
        chains["default"]["length"] == mine["length"] and chains["default"]["head_hash"] == mine["head_hash"]
    )
    assert chains["other"]["length"] == 2 and chains["other"]["ok"] is True
    assert chains[None]["chain"] == SYSTEM_CHAIN and chains[None]["ok"] is True
    first = api.get("/v1/audit/chains", params={"limit": 1}).json()
    rest = api.get("/v1/audit/chains", params={"limit": 50, "cursor": first["next_cursor"]}).json()
    assert [c["chain"] for c in first["items"] + rest["items"]] == [c["chain"] for c in page["items"]]

    other_chain = chains["other"]["chain"]
    with session_scope(api.ctx.session_factory) as s:
        s.execute(
            update(AuditEvent).where(AuditEvent.chain == other_chain, AuditEvent.seq == 1).values(actor="x")
        )
    chains = {c["tenant"]: c for c in api.get("/v1/audit/chains").json()["items"]}
    assert chains["other"]["ok"] is False and chains["other"]["first_bad_seq"] == 1
    assert chains["default"]["ok"] is True
    assert api.get("/v1/audit/chains", params={"nope": 1}).status_code == 422
    r = api.anonymous().get("/v1/audit/chains")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


# --- signed heads ----------------------------------------------------------------------------


def test_heads_are_signed_once_per_change(sessions: sessionmaker[Session], signer: Signer) -> None:
    append(sessions, "ten_a", 3)
    with session_scope(sessions) as s:
        assert sign_heads(s, signer) != []  # ten_a; the system chain is empty and not signed
    with session_scope(sessions) as s:
        assert sign_heads(s, signer) == []
        cp = latest_checkpoint(s, "ten_a")
        assert cp is not None and cp.seq == 3
        signed = signed_checkpoint(cp)
    assert verify_signed_head(signed, signer.public_key)["seq"] == 3
    append(sessions, "ten_a")
    with session_scope(sessions) as s:
        assert [cp.seq for cp in sign_heads(s, signer)] == [4]
    # Another key (a rotation) signs the unchanged head again.
    other = Signer(Ed25519PrivateKey.generate())
    with session_scope(sessions) as s:
        assert [(cp.seq, cp.key_id) for cp in sign_heads(s, other)] == [(4, other.key_id)]
    report = verify(sessions, "ten_a", signer)
    assert report["ok"] and report["signed_head"]["seq"] == 4


def _truncate(factory: sessionmaker[Session], chain: str, keep: int) -> None:
    """What a forger with database access does: delete the last events, rewrite the head to match."""
    with session_scope(factory) as s:
        last = s.get(AuditEvent, (chain, keep))
        assert last is not None
        s.execute(delete(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq > keep))
        s.execute(update(AuditHead).where(AuditHead.chain == chain).values(seq=keep, hash=last.hash))


def test_truncation_below_a_signed_head_fails_verification(
    sessions: sessionmaker[Session], signer: Signer
) -> None:
    append(sessions, "ten_a", 5)
    _truncate(sessions, "ten_a", 5)  # nothing removed: still valid
    assert verify(sessions, "ten_a", signer)["ok"]
    with session_scope(sessions) as s:
        sign_heads(s, signer)
    _truncate(sessions, "ten_a", 3)
    report = verify(sessions, "ten_a", signer)
    assert report["ok"] is False and report["length"] == 3 and report["first_bad_seq"] == 4
    assert "truncated" in report["reason"] and "signed at seq 5" in report["reason"]
    assert report["signed_head"]["seq"] == 5
    # The signer refuses to sign the shortened chain over its signed head.
    with session_scope(sessions) as s:
        assert sign_heads(s, signer) == []


def test_without_a_signed_head_the_same_truncation_goes_unnoticed(sessions: sessionmaker[Session]) -> None:
    """Why heads are signed: a consistent truncation is a valid shorter chain otherwise."""
    append(sessions, "ten_a", 5)
    _truncate(sessions, "ten_a", 3)
    assert verify(sessions, "ten_a")["ok"] is True


def test_altered_or_rewritten_signed_heads_are_detected(
    sessions: sessionmaker[Session], signer: Signer
) -> None:
    append(sessions, "ten_a", 3)
    with session_scope(sessions) as s:
        sign_heads(s, signer)
    with session_scope(sessions) as s:
        s.execute(update(AuditCheckpoint).values(signed_at=datetime.now(UTC) + timedelta(days=1)))
    report = verify(sessions, "ten_a", signer)
    assert report["ok"] is False and "invalid signature" in report["reason"]
    # Without the key the signature is not checked, but the chain must still reach the head.
    assert verify(sessions, "ten_a")["ok"] is True

    with session_scope(sessions) as s:
        s.execute(delete(AuditCheckpoint))
        sign_heads(s, signer)
        # A rewritten event 3 (and head), re-hashed consistently, no longer matches the signed head.
        e = s.get(AuditEvent, ("ten_a", 3))
        assert e is not None
        new_hash = event_hash(
            prev_hash=e.prev_hash,
            seq=3,
            ts=e.ts,
            tenant_id=e.tenant_id,
            actor="mallory",
            action=e.action,
            model=e.model,
            object_id=e.object_id,
            payload=e.payload,
        )
        s.execute(
            update(AuditEvent)
            .where(AuditEvent.chain == "ten_a", AuditEvent.seq == 3)
            .values(actor="mallory", hash=new_hash)
        )
        s.execute(update(AuditHead).where(AuditHead.chain == "ten_a").values(hash=new_hash))
    report = verify(sessions, "ten_a", signer)
    assert report["ok"] is False and report["first_bad_seq"] == 3 and "rewritten" in report["reason"]


def test_signed_heads_through_the_api(api: ApiClient) -> None:
    # The API signs heads in a thread of its own (UNLEARN_AUDIT_SIGN_INTERVAL_SECONDS).
    assert any(t.name == "audit-head-signer" and t.is_alive() for t in threading.enumerate())
    for i in range(3):
        api.create_model(f"m{i}")
    with session_scope(api.ctx.session_factory) as s:
        sign_heads(s, api.app.state.signer)
    key = api.anonymous().get("/.well-known/unlearn-signing-key").json()
    items = api.get("/v1/audit/checkpoints").json()["items"]
    assert items, "the head was signed"
    head = verify_signed_head(items[0], key)
    report = api.get("/v1/audit/verify").json()
    assert report["ok"] and (head["seq"], head["hash"]) == (report["length"], report["head_hash"])
    assert report["signed_head"]["seq"] == report["length"]
    with pytest.raises(VerificationError):
        verify_signed_head({**items[0], "document": {**items[0]["document"], "seq": 1}}, key)

    _truncate(api.ctx.session_factory, report["chain"], 2)
    report = api.get("/v1/audit/verify").json()
    assert report["ok"] is False and report["first_bad_seq"] == 3
    assert report["reason"].startswith("truncated: the chain ends at seq 2")


def test_the_signer_thread_signs_new_heads(sessions: sessionmaker[Session], signer: Signer) -> None:
    stop = start_head_signer_thread(sessions, signer, 0.05)
    try:
        append(sessions, "ten_a", 2)
        deadline = time.monotonic() + 10
        cp = None
        while time.monotonic() < deadline and (cp is None or cp.seq < 2):
            time.sleep(0.05)
            with sessions() as s:
                cp = latest_checkpoint(s, "ten_a")
        assert cp is not None and cp.seq == 2
    finally:
        stop()


# --- the 0002 migration: a global chain becomes one chain per tenant ----------------------------

_OLD_EVENTS = sa.table(
    "audit_events",
    *[
        sa.column(c)
        for c in ("seq", "tenant_id", "actor", "action", "model", "object_id", "prev_hash", "hash")
    ],
    sa.column("ts", sa.DateTime(timezone=True)),
    sa.column("payload", sa.JSON()),
)


def _seed_global_chain(url: str, tenants: list[str | None]) -> list[dict[str, Any]]:
    """Events in the 0001 schema: one global chain, the head row id=1 at its end."""
    upgrade(url, "0001")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    prev = GENESIS_HASH
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for seq, tenant in enumerate(tenants, start=1):
        row = {
            "seq": seq,
            "ts": t0 + timedelta(seconds=seq),
            "tenant_id": tenant,
            "actor": "seed",
            "action": "seed.event",
            "model": None,
            "object_id": f"obj{seq}",
            "payload": {"seq": seq, "text": "é"},
        }
        row["prev_hash"] = prev
        row["hash"] = prev = event_hash(prev_hash=prev, **{k: v for k, v in row.items() if k != "prev_hash"})
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(_OLD_EVENTS.insert(), rows)
        conn.execute(
            sa.text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": len(rows), "h": prev}
        )
    engine.dispose()
    return rows


def _check_upgrade(url: str, tamper: bool = False) -> None:
    tenants: list[str | None] = ["ten_a", "ten_b", None, "ten_a", "ten_a", "ten_b", None, "ten_c", "ten_a"]
    rows = _seed_global_chain(url, tenants * 3)
    if tamper:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 5"))
        engine.dispose()
    upgrade(url)

    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with factory() as s:
            chains = sorted(s.scalars(select(AuditHead.chain)))
        assert chains == sorted(["ten_a", "ten_b", "ten_c", SYSTEM_CHAIN])
        for chain in chains:
            report = verify(factory, chain)
            assert report["ok"] is True, report
            with factory() as s:
                events = s.scalars(
                    select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
                ).all()
            original = [r["object_id"] for r in rows if (r["tenant_id"] or SYSTEM_CHAIN) == chain]
            if chain == SYSTEM_CHAIN:
                rechained = events[-1]
                events = events[:-1]
                assert rechained.action == "audit.rechained"
                old = rechained.payload["global_chain"]
                assert old["length"] == len(rows) and old["head_hash"] == rows[-1]["hash"]
                assert old["ok"] is (not tamper)
                assert old["first_bad_seq"] == (5 if tamper else None)
            # Order kept, seq renumbered from 1 within the chain.
            assert [e.object_id for e in events] == original
            assert [e.seq for e in events] == list(range(1, len(original) + 1))
            assert all(e.tenant_id == (None if chain == SYSTEM_CHAIN else chain) for e in events)
        # Appends continue each chain.
        with session_scope(factory) as s:
            assert append_event(s, actor="x", action="after", tenant_id="ten_c").seq == 4
        assert verify(factory, "ten_c")["ok"]
    finally:
        engine.dispose()

    # Back to 0001: one global chain again, in time order, that verifies with the old rules.
    downgrade(url, "0001")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        old_rows = conn.execute(sa.select(_OLD_EVENTS).order_by(sa.column("seq"))).all()
        head = conn.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
        assert "audit_heads" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    prev = GENESIS_HASH
    for i, r in enumerate(old_rows, start=1):
        assert r.seq == i and r.prev_hash == prev
        ts = r.ts if r.ts.tzinfo else r.ts.replace(tzinfo=UTC)
        fields = {k: getattr(r, k) for k in ("tenant_id", "actor", "action", "model", "object_id", "payload")}
        assert event_hash(prev_hash=prev, seq=i, ts=ts, **fields) == r.hash
        prev = r.hash
    assert [r.object_id for r in old_rows[: len(rows)]] == [r["object_id"] for r in rows]
    assert old_rows[len(rows)].action == "audit.rechained"
    assert (head.seq, head.hash) == (len(old_rows), prev)
    upgrade(url)  # and up again


def test_migration_rechains_a_global_chain_on_sqlite(tmp_path: Path) -> None:
    _check_upgrade(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_rechains_a_global_chain_on_postgres(postgres_url: str) -> None:
    _check_upgrade(postgres_url)


def test_migration_records_a_broken_global_chain(tmp_path: Path) -> None:
    """Re-hashing would launder tampering: the migration says where the old chain broke."""
    _check_upgrade(f"sqlite:///{tmp_path / 'm.db'}", tamper=True)


def test_downgrade_restores_the_0001_schema(tmp_path: Path) -> None:
    def schema(url: str) -> dict[str, Any]:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        insp = sa.inspect(engine)
        out = {
            t: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
                insp.get_pk_constraint(t)["constrained_columns"],
                sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)),
                sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)),
            )
            for t in ("audit_events", "audit_head")
        }
        engine.dispose()
        return out

    plain, round_trip = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(plain, "0001")
    _seed_global_chain(round_trip, [None, "ten_a"])
    upgrade(round_trip)
    downgrade(round_trip, "0001")
    assert schema(round_trip) == schema(plain)
    engine = sa.create_engine(round_trip, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(_OLD_EVENTS)).scalar() == 3
    engine.dispose()
