"""Shared fixtures: the real PostgreSQL and Redis servers.

With CI=true a missing server fails the tests that need it (it must never pass silently);
elsewhere those tests are skipped with a message that says how to start the server.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.service_fixtures"]

PG_HOST = os.environ.get("UNLEARN_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("UNLEARN_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("UNLEARN_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("UNLEARN_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("UNLEARN_TEST_REDIS_PORT", "6379"))

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no',
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}; start it with: {START_HINTS[name]}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}"


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"unlearn_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{postgres_server_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_server_url}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database index that no other test session on this machine uses meanwhile.

    Sessions of several people (or CI beside a developer) share one server: on a shared index one
    session's worker would take the other's messages (its job: "no such job", acked, lost) and
    each flush would drop the other's queue. An index is held by a lock file for the session;
    UNLEARN_TEST_REDIS_DB names one (waiting for it if another session holds it).
    """
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    explicit = os.environ.get("UNLEARN_TEST_REDIS_DB")
    candidates = [int(explicit)] if explicit else [*range(8, 16), *range(1, 8)]
    for db in candidates:
        lock = open(Path(tempfile.gettempdir()) / f"unlearn-tests-redis-db{db}.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if explicit else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            yield db
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        return
    pytest.fail(f"Redis databases {candidates} are all held by other test sessions", pytrace=False)


@pytest.fixture
def redis_url(redis_db: int) -> Iterator[str]:
    """The session's Redis database index, flushed before and after the test."""
    import redis

    db = redis_db
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()
