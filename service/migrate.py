"""Run the Alembic migrations programmatically (app start-up, the CLI, tests).

Several processes may start at once (API, workers): the upgrade runs under a lock (an advisory
lock on PostgreSQL, a file lock beside a SQLite file) so they never race to create tables.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "migrations"
_PG_LOCK_KEY = 0x756E6C6561726E  # "unlearn"


def alembic_config(database_url: str) -> Config:
    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # Keep the service's logging configuration: alembic.ini's would replace it.
    cfg.attributes["skip_logging_config"] = True
    return cfg


@contextlib.contextmanager
def _sqlite_file_lock(database_url: str) -> Iterator[None]:
    db = make_url(database_url).database
    if not db or db == ":memory:":
        yield
        return
    lock_path = Path(db).with_suffix(Path(db).suffix + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(database_url: str, action: str, revision: str) -> None:
    cfg = alembic_config(database_url)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        is_sqlite = engine.dialect.name == "sqlite"
        lock = _sqlite_file_lock(database_url) if is_sqlite else contextlib.nullcontext()
        with lock, engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                getattr(command, action)(cfg, revision)
                conn.commit()
            finally:
                if engine.dialect.name == "postgresql":
                    _unlock(conn)
    finally:
        engine.dispose()


def _unlock(conn: Connection) -> None:
    conn.rollback()
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
    conn.commit()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent: at head it does nothing)."""
    _run(database_url, "upgrade", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _run(database_url, "downgrade", revision)


def current_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
