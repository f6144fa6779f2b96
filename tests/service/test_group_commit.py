"""service.db.GroupCommit: units of work from many threads, written in shared transactions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import GroupCommit, make_engine, make_session_factory, read_scope

META = sa.MetaData()
ROWS = sa.Table("rows", META, sa.Column("k", sa.String(20), primary_key=True))


@pytest.fixture
def factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    META.create_all(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _keys(factory) -> set[str]:  # type: ignore[no-untyped-def]
    with read_scope(factory) as s:
        return set(s.scalars(sa.select(ROWS.c.k)))


def test_concurrent_units_share_transactions_and_each_gets_its_result(factory) -> None:  # type: ignore[no-untyped-def]
    gc = GroupCommit(factory, max_units=8)
    commits = []
    sa.event.listen(factory, "after_commit", lambda s: commits.append(1))
    results: dict[int, str] = {}
    gate = threading.Barrier(32)

    def insert(i: int) -> None:
        def work(s: Session) -> str:
            s.execute(ROWS.insert().values(k=f"k{i}"))
            return f"done {i}"

        gate.wait()
        results[i] = gc.run(work)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: f"done {i}" for i in range(32)}
    assert _keys(factory) == {f"k{i}" for i in range(32)}
    assert len(commits) <= 32  # at least as few commits as units; usually far fewer


def test_a_failing_unit_fails_alone(factory) -> None:  # type: ignore[no-untyped-def]
    gc = GroupCommit(factory)
    gc.run(lambda s: s.execute(ROWS.insert().values(k="taken")))
    errors: dict[int, BaseException] = {}
    gate = threading.Barrier(12)

    def insert(i: int) -> None:
        key = "taken" if i % 4 == 0 else f"k{i}"  # every fourth collides with an existing row
        gate.wait()
        try:
            gc.run(lambda s: s.execute(ROWS.insert().values(k=key)))
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(errors) == [0, 4, 8] and all(isinstance(e, IntegrityError) for e in errors.values())
    assert _keys(factory) == {"taken"} | {f"k{i}" for i in range(12) if i % 4}


def test_an_error_in_work_reaches_its_caller_and_nothing_is_written(factory) -> None:  # type: ignore[no-untyped-def]
    gc = GroupCommit(factory)

    def work(s: Session) -> None:
        s.execute(ROWS.insert().values(k="half"))
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        gc.run(work)
    assert _keys(factory) == set()
    assert gc.run(lambda s: 7) == 7  # and the next caller leads again


def test_concurrent_intakes_through_the_api(api) -> None:  # type: ignore[no-untyped-def]
    """16 deletion requests at once (4 of them retries of one Idempotency-Key): every fresh one is
    recorded once, in one batch job; the retries answer as the first did; the chain verifies."""
    from tests.service_fixtures import make_checkpoint, make_dataset

    api.create_model("gc")
    assert api.upload_version("gc", make_checkpoint()).status_code == 201
    url = "/v1/models/gc/deletion-requests"
    answers: dict[int, tuple[int, dict]] = {}  # type: ignore[type-arg]
    gate = threading.Barrier(16)

    def post(i: int) -> None:
        key = "same" if i < 4 else f"k{i}"
        blob = make_dataset(2, seed=0 if i < 4 else i)
        gate.wait()
        r = api.post(url, files={"forget_set": ("f", blob)}, headers={"Idempotency-Key": key})
        answers[i] = (r.status_code, r.json())

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {s for s, _ in answers.values()} == {202}, answers
    ids = {b["id"] for _, b in answers.values()}
    assert len(ids) == 13  # the 4 retries share one id
    assert len({answers[i][1]["id"] for i in range(4)}) == 1
    assert len({b["job_id"] for _, b in answers.values()}) == 1  # they joined one batch
    listed = api.get("/v1/deletion-requests", params={"model": "gc", "limit": 100}).json()["items"]
    assert {r["id"] for r in listed} == ids
    assert api.get("/v1/audit/verify").json()["ok"] is True
