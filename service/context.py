"""Everything a process (API or worker) shares: settings, database engine, sessions, storage, and
the publisher that hands jobs to the broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory
from service.deletions.purge import purge_forget_sets
from service.outbox import Publisher, publish_rows
from service.privacy import load_service_secret, tenant_key
from service.settings import Settings
from service.storage import ArtifactStore
from service.unit_of_work import PendingEffects, install


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    storage: ArtifactStore
    secret: bytes = field(repr=False)
    # None: the Celery client for the configured broker, built on first use. Tests put a fake here.
    _publisher: Publisher | None = field(default=None, repr=False)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            from service.broker import publisher_for

            self._publisher = publisher_for(self.settings)
        return self._publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def run_effects(self, effects: PendingEffects) -> None:
        """What a committed transaction recorded (service.unit_of_work): publish, then purge."""
        if effects.outbox_ids:
            publish_rows(self.session_factory, self.publisher, effects.outbox_ids)
        if effects.purge_request_ids:
            self.purge_forget_sets(effects.purge_request_ids)
        for callback in effects.callbacks:
            callback()

    def purge_forget_sets(self, request_ids: list[str] | None = None) -> int:
        """Stored forget sets of ended requests past their retention (all, or these requests')."""
        return purge_forget_sets(
            self.session_factory,
            self.storage,
            self.settings.forget_set_retention_seconds,
            request_ids,
            failed_retention_seconds=self.settings.failed_forget_set_retention_seconds,
        )

    def tenant_key(self, tenant_id: str) -> bytes:
        """The key of the tenant's digests outside the database (service/privacy.py)."""
        return tenant_key(self.secret, tenant_id)

    def close(self) -> None:
        self.engine.dispose()


def build_context(settings: Settings, publisher: Publisher | None = None) -> ServiceContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_embedded_broker:
        # The embedded kombu filesystem transport needs its folder to exist.
        settings.broker_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    ctx = ServiceContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        storage=ArtifactStore(settings.resolved_storage_url),
        secret=load_service_secret(settings),
        _publisher=publisher,
    )
    install(ctx.session_factory, ctx.run_effects)
    return ctx
