"""Database engine, sessions and the declarative base (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, literal
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Named constraints let Alembic's batch mode rebuild SQLite tables and drop constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite would hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def db_time(value: datetime) -> Any:
    """A typed literal, so SQLite compares and stores it in the column's own text format."""
    return literal(value, UTCDateTime())


# Connections kept open per process. The API runs its blocking work in anyio's thread pool (40
# threads): under load each thread holds a session at a time, and a pool smaller than that closed
# every connection opened beyond it on its return (at 32 connections the service benchmark saw
# over 800 PostgreSQL sessions opened in one round of about 3,000 requests, each a backend forked
# and authenticated; 65 with this pool).
# Opened lazily: a process that never needs them never opens them.
POOL_SIZE = 20
POOL_MAX_OVERFLOW = 20


def make_engine(url: str, **kwargs: Any) -> Engine:
    in_memory = url.startswith("sqlite") and (
        url.rstrip("/") == "sqlite:" or ":memory:" in url or "mode=memory" in url
    )
    if not in_memory:  # an in-memory SQLite database has a pool of its own kind
        kwargs = {"pool_size": POOL_SIZE, "max_overflow": POOL_MAX_OVERFLOW, **kwargs}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions, so that "begin" below is honoured.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get(_READ_ONLY):
                # A read transaction (read_scope): WAL readers take no lock and wait for no writer.
                conn.exec_driver_sql("BEGIN DEFERRED")
                return
            # IMMEDIATE takes the write lock up front: a read-then-write transaction (claiming a job,
            # appending to the audit chain) can then never fail on lock upgrade or interleave.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def _transaction(make: Callable[[], Session]) -> Iterator[Session]:
    session = make()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def session_scope(factory: sessionmaker[Session]) -> AbstractContextManager[Session]:
    """One transaction: commit on success, roll back on any error."""
    return _transaction(factory)


_READ_ONLY = "unlearn_read_only"
_readers: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def read_session(factory: sessionmaker[Session]) -> Session:
    """A session for reading only; it must not write.

    On SQLite its transaction begins DEFERRED instead of taking the write lock, so reads
    (authentication, a GET) never queue behind a writer's transaction (a write in it could fail
    with "database is locked" when another connection wrote meanwhile). On other databases it
    runs in autocommit: no BEGIN and COMMIT round trips around its queries, and each query sees
    the data committed when it runs, as it would at READ COMMITTED (PostgreSQL's default) anyway.
    """
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        return factory()
    reader = _readers.get(bind)
    if reader is None:
        options: dict[str, Any] = (
            {_READ_ONLY: True} if bind.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        )
        reader = _readers[bind] = bind.execution_options(**options)
    return factory(bind=reader)


def read_scope(factory: sessionmaker[Session]) -> AbstractContextManager[Session]:
    """:func:`session_scope` for reading only: see :func:`read_session`."""
    return _transaction(lambda: read_session(factory))


T = TypeVar("T")


class _Unit(Generic[T]):
    __slots__ = ("context", "error", "finished", "result", "wake", "work")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        # Run in the caller's context (its request id in the log lines), whichever thread leads.
        self.context = contextvars.copy_context()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.wake = threading.Event()


class GroupCommit:
    """Units of work from many threads written in shared transactions: group commit.

    Why: a write that appends to a tenant's audit chain holds the chain's row lock (and the
    intake the model's) until its commit, and a commit waits for the log to reach the disk
    (a few ms here). One transaction per request therefore serialises a tenant's writes behind
    one fsync each, whatever the number of API threads or processes. Here the units that arrive
    while one transaction runs are written together in the next: one lock acquisition, one
    commit and one fsync for all of them; the after-commit effects of all run once it committed.

    ``run(work)`` blocks until ``work(session)`` is committed (returns its result) or failed
    (raises its error). No thread of its own: the first caller that finds no transaction running
    leads: it writes what is queued, batch after batch, until its own unit is done, then hands
    over to the next waiting caller. A unit that raises is rolled back with its batch and the
    others are written again without it (so ``work`` must only write through the session, and
    may run more than once); a flush or commit that fails is retried unit by unit, so one unit's
    error never becomes another's.

    The units run without autoflush, and code that flushes only to send its rows early leaves
    them to one flush after the last unit (:func:`flush_deferred`): the batch's rows go as
    multi-row INSERTs instead of a few round trips per unit, made while the batch holds its
    locks. A unit whose answer needs its rows flushed (ids, defaults) returns an
    :class:`AfterFlush`, called after that flush.
    """

    def __init__(self, factory: sessionmaker[Session], max_units: int = 64) -> None:
        self._factory = factory
        self._max_units = max_units
        self._mutex = threading.Lock()
        self._queue: deque[_Unit[Any]] = deque()
        self._leading = False

    @overload
    def run(self, work: Callable[[Session], AfterFlush[T]]) -> T: ...

    @overload
    def run(self, work: Callable[[Session], T]) -> T: ...

    def run(self, work: Callable[[Session], Any]) -> Any:
        unit = _Unit(work)
        with self._mutex:
            self._queue.append(unit)
            lead = not self._leading
            self._leading = True
        while not unit.finished:
            if lead:
                self._lead(unit)
                continue
            unit.wake.wait()
            with self._mutex:
                unit.wake.clear()
                if unit.finished:
                    break
                lead = not self._leading
                self._leading = True
        if unit.error is not None:
            raise unit.error
        return unit.result

    def _lead(self, own: _Unit[Any]) -> None:
        try:
            while not own.finished:
                with self._mutex:
                    batch = [self._queue.popleft() for _ in range(min(self._max_units, len(self._queue)))]
                self._write(batch)
        finally:
            with self._mutex:
                self._leading = False
                following = self._queue[0] if self._queue else None
            if following is not None:
                following.wake.set()  # it leads next (unless a new caller took the lead first)

    @staticmethod
    def _finish(unit: _Unit[Any], result: Any = None, error: BaseException | None = None) -> None:
        unit.result, unit.error, unit.finished = result, error, True
        unit.wake.set()

    def _write(self, batch: list[_Unit[Any]]) -> None:
        pending = list(batch)
        while pending:
            failed: _Unit[Any] | None = None
            results: list[Any] = []
            try:
                with session_scope(self._factory) as session:
                    # The units' rows are sent together: one flush (multi-row INSERTs) for the
                    # batch, not one per unit, each a round trip made under the batch's locks.
                    session.info[_DEFER_FLUSH] = True
                    with session.no_autoflush:
                        for unit in pending:
                            failed = unit
                            results.append(unit.context.run(unit.work, session))
                        failed = None
                    session.flush()  # an error here has no unit: the commit path below
                    for i, (unit, result) in enumerate(zip(pending, results, strict=True)):
                        if isinstance(result, AfterFlush):
                            failed = unit
                            results[i] = unit.context.run(result.then, session)
                    failed = None
            except BaseException as exc:
                if failed is not None:  # this unit's work raised: the others go again without it
                    self._finish(failed, error=exc)
                    pending.remove(failed)
                    continue
                if len(pending) == 1:
                    self._finish(pending[0], error=exc)
                    return
                for unit in pending:  # the commit failed: each alone, so the error finds its unit
                    self._write([unit])
                return
            for unit, result in zip(pending, results, strict=True):
                self._finish(unit, result)
            return


_DEFER_FLUSH = "group_commit_defers_flush"


class AfterFlush(Generic[T]):
    """What a :class:`GroupCommit` unit may return when its answer needs its rows flushed (ids,
    defaults): ``then(session)`` is called once the whole batch is flushed, and its result is the
    unit's. Elsewhere (a unit run alone, or code outside a group commit) see :func:`settle`."""

    __slots__ = ("then",)

    def __init__(self, then: Callable[[Session], T]) -> None:
        self.then = then


def settle(session: Session, result: T | AfterFlush[T]) -> T:
    """The result itself, or an :class:`AfterFlush`'s, after flushing (outside a group commit)."""
    if isinstance(result, AfterFlush):
        session.flush()
        return result.then(session)
    return result


def flush_deferred(session: Session) -> bool:
    """Whether this session is a group commit's, which flushes its units' rows together: code that
    flushes only to send its rows early may leave them to that flush."""
    return bool(session.info.get(_DEFER_FLUSH))


_group_commits: weakref.WeakKeyDictionary[sessionmaker[Session], GroupCommit] = weakref.WeakKeyDictionary()
_group_commits_lock = threading.Lock()


def group_commit(factory: sessionmaker[Session]) -> GroupCommit:
    """The process's :class:`GroupCommit` for this session factory (one per database)."""
    with _group_commits_lock:
        gc = _group_commits.get(factory)
        if gc is None:
            gc = _group_commits[factory] = GroupCommit(factory)
        return gc
