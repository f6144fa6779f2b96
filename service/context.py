"""Everything a process (API or worker) shares: settings, database engine, sessions, storage."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory
from service.settings import Settings
from service.storage import ArtifactStore


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    storage: ArtifactStore

    def close(self) -> None:
        self.engine.dispose()


def build_context(settings: Settings) -> ServiceContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_embedded_broker:
        # The embedded kombu filesystem transport needs its folder to exist.
        settings.broker_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    return ServiceContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        storage=ArtifactStore(settings.resolved_storage_url),
    )
