"""The hash-chained audit log: appends, verification, tamper detection, concurrent appends.

One chain here (tenant "t1", or the system chain); tests/service/test_audit_tenants.py has the
per-tenant chains, their migration and the signed heads."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.audit.hashing import GENESIS_HASH, canonical_json, hash_of
from service.audit.logic import SYSTEM_CHAIN, append_event
from service.audit.verification import verify_chain
from service.db import make_engine, make_session_factory, session_scope
from service.migrate import upgrade
from service.tables import AuditEvent, AuditHead
from tests.service_fixtures import ApiClient


@pytest.fixture
def sessions(fresh_db_url: str) -> Iterator[sessionmaker[Session]]:
    """A database of the test's own, migrated: each chain starts pristine at the genesis hash."""
    engine = make_engine(fresh_db_url)
    yield make_session_factory(engine)
    engine.dispose()


def append_n(factory: sessionmaker[Session], n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with session_scope(factory) as s:
            append_event(
                s,
                actor="tester",
                action="test.event",
                tenant_id="t1",
                model="m",
                object_id=f"obj{i}",
                payload={"i": i, "text": "é ✓", "nested": {"b": 1, "a": [1.5, None]}},
            )


CHAIN = "t1"


def verify(factory: sessionmaker[Session], chain: str = CHAIN) -> dict:
    with session_scope(factory) as s:
        return dict(verify_chain(s, chain))


def test_chain_appends_and_verifies(sessions: sessionmaker[Session]) -> None:
    assert verify(sessions) == {
        "chain": CHAIN,
        "ok": True,
        "length": 0,
        "head_hash": GENESIS_HASH,
        "first_bad_seq": None,
        "reason": None,
        "signed_head": None,
    }
    append_n(sessions, 5)
    report = verify(sessions)
    assert report["ok"] and report["length"] == 5 and report["first_bad_seq"] is None
    with sessions() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq)).all()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert report["head_hash"] == events[-1].hash
        # The hash is reproducible from the documented recipe alone.
        e = events[2]
        body = {
            "seq": e.seq,
            "ts": e.ts.isoformat(timespec="microseconds"),
            "tenant_id": e.tenant_id,
            "actor": e.actor,
            "action": e.action,
            "model": e.model,
            "object_id": e.object_id,
            "payload": e.payload,
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert text == canonical_json(body)
        assert hashlib.sha256((e.prev_hash + text).encode()).hexdigest() == e.hash


def test_non_finite_payload_values_are_stored_as_null(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as s:
        event = append_event(s, actor="a", action="x", payload={"loss": float("nan"), "ok": 1.0})
    assert event.payload == {"loss": None, "ok": 1.0} and event.chain == SYSTEM_CHAIN
    assert verify(sessions, SYSTEM_CHAIN)["ok"]


def test_edited_payload_is_detected(sessions: sessionmaker[Session]) -> None:
    append_n(sessions, 6)
    with session_scope(sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(payload={"i": 999}))
    report = verify(sessions)
    assert report["ok"] is False and report["first_bad_seq"] == 4
    assert "hash" in report["reason"]


def test_edited_row_with_recomputed_hash_breaks_the_next_link(sessions: sessionmaker[Session]) -> None:
    append_n(sessions, 4)
    with session_scope(sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
        e = s.get(AuditEvent, (CHAIN, 2))
        assert e is not None
        # A forger who recomputes this row's hash still breaks the link from row 3.
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(hash=hash_of(e, e.prev_hash)))
    assert verify(sessions)["first_bad_seq"] == 3


def test_deleted_middle_row_is_detected(sessions: sessionmaker[Session]) -> None:
    append_n(sessions, 6)
    with session_scope(sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
    report = verify(sessions)
    assert report["ok"] is False and report["first_bad_seq"] == 3
    assert "missing" in report["reason"]


def test_deleted_last_row_is_detected_by_the_head(sessions: sessionmaker[Session]) -> None:
    append_n(sessions, 5)
    with session_scope(sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
    report = verify(sessions)
    assert report["ok"] is False and report["first_bad_seq"] == 5 and report["length"] == 4


def test_reordered_rows_are_detected(sessions: sessionmaker[Session]) -> None:
    append_n(sessions, 4)
    with session_scope(sessions) as s:
        a, b = s.get(AuditEvent, (CHAIN, 2)), s.get(AuditEvent, (CHAIN, 3))
        assert a is not None and b is not None
        pa, pb = dict(a.payload), dict(b.payload)
        oa, ob = a.object_id, b.object_id
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(payload=pb, object_id=ob))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(payload=pa, object_id=oa))
    assert verify(sessions)["first_bad_seq"] == 2


def test_truncated_table_with_rewritten_head_is_still_consistent_only_if_rehashed(
    sessions: sessionmaker[Session],
) -> None:
    append_n(sessions, 3)
    with session_scope(sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
        s.execute(update(AuditHead).values(seq=2))  # the head's hash still names event 3
    report = verify(sessions)
    assert report["ok"] is False and report["first_bad_seq"] == 2


def test_concurrent_appends_form_one_chain(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):
                with session_scope(factory) as s:
                    append_event(s, actor=f"t{i}", action="race", payload={"i": i, "j": j})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(factory) as s:
        report = dict(verify_chain(s, SYSTEM_CHAIN))
        seqs = s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    engine.dispose()
    assert report["ok"] is True and report["length"] == 60
    assert seqs == list(range(1, 61))


def test_concurrent_appends_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    threads = [threading.Thread(target=append_n, args=(factory, 3, i * 3)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify(factory)["length"] == 18 and verify(factory)["ok"]
    engine.dispose()


def test_audit_api_lists_tenant_events_and_verifies(api: ApiClient) -> None:
    api.create_model("a")
    api.create_model("b")
    other = api.with_key(api.new_key(["audit:read", "models:write"], tenant="other"))
    other.create_model("c")

    mine = api.get("/v1/audit").json()["items"]
    # The new key's creation belongs to the tenant the key lives in.
    assert [e["action"] for e in mine] == ["key.created", "model.created", "model.created"]
    assert {e["model"] for e in mine if e["action"] == "model.created"} == {"a", "b"}
    theirs = other.get("/v1/audit").json()["items"]
    assert [(e["action"], e["model"]) for e in theirs] == [("key.created", None), ("model.created", "c")]

    assert [e["model"] for e in api.get("/v1/audit", params={"model": "b"}).json()["items"]] == ["b"]
    assert len(api.get("/v1/audit", params={"action": "model.created"}).json()["items"]) == 2
    future = api.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["items"]
    assert future == []
    since = mine[1]["ts"]
    assert [e["seq"] for e in api.get("/v1/audit", params={"since": since}).json()["items"]] == [
        e["seq"] for e in mine[1:]
    ]

    page1 = api.get("/v1/audit", params={"limit": 2}).json()
    page2 = api.get("/v1/audit", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [e["seq"] for e in page1["items"] + page2["items"]] == [e["seq"] for e in mine]

    # Each listed event can be re-hashed by the auditor from the answer alone.
    prev = None
    for e in mine:
        body = {
            k: e[k] for k in ("seq", "ts", "tenant_id", "actor", "action", "model", "object_id", "payload")
        }
        body["ts"] = e["ts"].replace("Z", "+00:00") if e["ts"].endswith("Z") else e["ts"]
        assert hashlib.sha256((e["prev_hash"] + canonical_json(body)).encode()).hexdigest() == e["hash"]
        prev = e
    assert prev is not None

    report = api.get("/v1/audit/verify").json()
    # The caller's own chain only: the other tenant's key and model are in a chain of their own.
    chain = mine[0]["tenant_id"]
    assert {k: report[k] for k in ("chain", "ok", "length", "head_hash", "first_bad_seq", "reason")} == {
        "chain": chain,
        "ok": True,
        "length": 3,
        "head_hash": mine[-1]["hash"],
        "first_bad_seq": None,
        "reason": None,
    }
    assert [e["seq"] for e in theirs] == [1, 2]
    with session_scope(api.ctx.session_factory) as s:
        s.execute(
            update(AuditEvent)
            .where(AuditEvent.chain == chain, AuditEvent.seq == 2)
            .values(actor="someone else")
        )
    report = api.get("/v1/audit/verify").json()
    assert report["ok"] is False and report["first_bad_seq"] == 2
