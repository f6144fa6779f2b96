"""Alembic: upgrade head on fresh SQLite and PostgreSQL matches the models; downgrade works."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, select

import service.tables  # noqa: F401
from service.db import Base
from service.migrate import current_revision, downgrade, upgrade
from service.tables import AuditHead


def _diff(url: str) -> list:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True, "render_as_batch": True}
            )
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check_round_trip(url: str) -> None:
    upgrade(url)
    assert current_revision(url) is not None
    assert _diff(url) == []
    assert set(Base.metadata.tables) <= _tables(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        head = conn.execute(select(AuditHead.seq, AuditHead.hash)).one()
    engine.dispose()
    assert tuple(head) == (0, "0" * 64)
    upgrade(url)  # idempotent
    downgrade(url, "base")
    assert _tables(url) - {"alembic_version"} == set()
    upgrade(url)
    assert _diff(url) == []


def test_sqlite_upgrade_downgrade(tmp_path) -> None:
    check_round_trip(f"sqlite:///{tmp_path / 'm.db'}")


def test_postgres_upgrade_downgrade(postgres_url: str) -> None:
    check_round_trip(postgres_url)
