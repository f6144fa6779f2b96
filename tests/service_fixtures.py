"""Fixtures for tests of the service (app, database, keys). Loaded by tests/conftest.py.

Generic on purpose: the jobs/integration tests reuse them.

Set-up cost is paid once per session, not once per test: each backend (SQLite, PostgreSQL) has
one migrated database for the whole session, emptied after every test (the rows of every table
but ``alembic_version`` deleted, sequences restarted, the rows the migrations seed put back), and
each distinct set of settings on such a database has one started app, whose artifact and data
folders and HTTP metrics are cleaned after every test. The bootstrap admin key is created again
before each test.

- ``make_settings(tmp_path, database_url=..., broker_url=..., **overrides)``: Settings rooted in tmp_path
  (SQLite file, embedded filesystem broker, local artifact folder unless overridden).
- ``db_url`` fixture, parametrized "sqlite" / "postgres": the session's migrated database of that
  backend, empty but for the migrations' seed rows (and the admin key once an app has started on
  it); emptied again after the test. ``shared_sqlite_url`` / ``shared_postgres_url``: one backend.
- ``fresh_db_url`` fixture, parametrized "sqlite" / "postgres": a database of the test's own,
  migrated to head (a copy of the session's template), dropped afterwards; for tests that must
  not share (the audit chain). ``postgres_url`` (tests/conftest.py): an empty, unmigrated one.
- ``api`` fixture: an :class:`ApiClient` on an app started with ``api_settings`` (override it to
  change settings), authorised with the bootstrap admin key; ``api.anonymous()``,
  ``api.with_key(key)``, ``api.new_key(scopes, tenant=)``. Apps on a shared database are shared
  by the tests that ask for the same settings: paths under the test's tmp_path are rebased onto
  a folder of the app's own, so read paths from ``api.settings``, not from tmp_path. Settings on
  any other database get an app of the test's own, as before. ``sqlite_api``: the same on SQLite.
  ``make_api(**overrides)``: the same with other settings (a body limit, a broker...).
- ``mlp_checkpoint`` / ``make_checkpoint`` / ``make_dataset``: safetensors bytes built with the engine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.context import ServiceContext
from service.settings import Settings

ADMIN_KEY = "ulk_00000000_" + "A" * 43
MLP_ARCH: dict[str, Any] = {
    "name": "mlp",
    "config": {"input_dim": 64, "hidden_dims": [16], "num_classes": 10},
}


def make_settings(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    storage_url: str | None = None,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "database_url": database_url or f"sqlite:///{tmp_path / 'unlearn.db'}",
        "broker_url": broker_url or "",
        "storage_url": storage_url or str(tmp_path / "artifacts"),
        "admin_key": ADMIN_KEY,
        "log_json": True,
        "log_level": "WARNING",
        # Tests drive the outbox/reconciler themselves unless they ask for the background loop.
        "run_reconciler_in_api": False,
    }
    values.update(overrides)
    return Settings(**values)


class ApiClient(TestClient):
    """A TestClient whose requests carry the admin key unless told otherwise."""

    app: FastAPI

    @property
    def ctx(self) -> ServiceContext:
        return self.app.state.ctx

    @property
    def settings(self) -> Settings:
        return self.app.state.ctx.settings

    def anonymous(self) -> TestClient:
        """A client on the same (already started) app, without credentials."""
        return TestClient(self.app, raise_server_exceptions=False)

    def with_key(self, key: str) -> ApiClient:
        """A client on the same app with another key (its helpers then act as that key)."""
        return ApiClient(self.app, headers={"Authorization": f"Bearer {key}"}, raise_server_exceptions=False)

    def new_key(self, scopes: list[str], *, tenant: str | None = None, name: str = "test") -> str:
        """Create a key through the API (admin); returns its plaintext."""
        body: dict[str, Any] = {"name": name, "scopes": scopes}
        if tenant is not None:
            body["tenant"] = tenant
        r = self.post("/v1/keys", json=body)
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def create_model(
        self, name: str = "mlp", architecture: dict[str, Any] | None = None, **extra: Any
    ) -> dict:
        body = {"name": name, "task": "classification", "architecture": architecture or MLP_ARCH, **extra}
        r = self.post("/v1/models", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def upload_version(
        self, name: str, checkpoint: bytes, eval_set: bytes | None = None, description: str | None = None
    ) -> Any:
        files: dict[str, Any] = {"checkpoint": ("model.safetensors", checkpoint, "application/octet-stream")}
        if eval_set is not None:
            files["eval_set"] = ("eval.safetensors", eval_set, "application/octet-stream")
        data = {"description": description} if description is not None else None
        return self.post(f"/v1/models/{name}/versions", files=files, data=data)


def start_api(settings: Settings) -> ApiClient:
    from service.app import create_app

    client = ApiClient(
        create_app(settings),
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        raise_server_exceptions=False,
    )
    client.__enter__()  # runs the lifespan: migrations, admin key
    return client


# --- databases: one migrated database per backend and session --------------------------------


def _is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def _reset_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        # Foreign keys are off on a plain SQLite connection; every statement waits for locks.
        return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": 30})
    return sa.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


@dataclass
class MigratedTemplate:
    """A database migrated to head once per session; copies of it are fresh databases."""

    url: str
    tables: list[sa.Table]  # every table but alembic_version, parents first
    seed: dict[str, list[dict[str, Any]]]  # the rows the migrations insert (the audit chain's head)
    sequences: list[str]  # PostgreSQL's sequences; on SQLite ["sqlite_sequence"] if AUTOINCREMENT is used

    @classmethod
    def migrate(cls, url: str) -> MigratedTemplate:
        from service.migrate import upgrade

        upgrade(url)
        engine = _reset_engine(url)
        try:
            metadata = sa.MetaData()
            metadata.reflect(engine)
            tables = [t for t in metadata.sorted_tables if t.name != "alembic_version"]
            with engine.connect() as conn:
                seed = {t.name: [dict(row._mapping) for row in conn.execute(sa.select(t))] for t in tables}
                if _is_postgres(url):
                    query = "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
                else:
                    query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
                sequences = list(conn.exec_driver_sql(query).scalars())
        finally:
            engine.dispose()
        return cls(url=url, tables=tables, seed=seed, sequences=sequences)


class SharedDatabase:
    """A copy of the template that the tests of a session share; ``reset()`` empties it again."""

    urls: ClassVar[set[str]] = set()  # the shared databases alive now: apps on them are pooled

    def __init__(self, url: str, template: MigratedTemplate) -> None:
        self.url = url
        self.template = template
        self.engine = _reset_engine(url)
        SharedDatabase.urls.add(url)

    def reset(self) -> None:
        """Every table but alembic_version emptied, sequences restarted, the seed rows put back."""
        if not _is_postgres(self.url):
            self._reset_once()
            return
        try:
            self._reset_once()
        except sa.exc.OperationalError:
            # A connection left idle in a transaction may hold the locks the DELETEs wait for.
            self._terminate_idle_transactions()
            self._reset_once()

    def _reset_once(self) -> None:
        # DELETE, not TRUNCATE: on a few rows it is ten times faster (TRUNCATE makes new files).
        tables = self.template.tables
        with self.engine.begin() as conn:
            if _is_postgres(self.url):
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            for table in reversed(tables):
                conn.execute(table.delete())
            for sequence in self.template.sequences:
                if _is_postgres(self.url):
                    conn.exec_driver_sql(f'ALTER SEQUENCE "{sequence}" RESTART')
                else:
                    conn.exec_driver_sql("DELETE FROM sqlite_sequence")
            for table in tables:
                if rows := self.template.seed[table.name]:
                    conn.execute(table.insert(), rows)

    def _terminate_idle_transactions(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
            conn.commit()

    def close(self) -> None:
        SharedDatabase.urls.discard(self.url)
        self.engine.dispose()


class PostgresAdmin:
    """CREATE / DROP DATABASE on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.engine = sa.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")

    def create(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
        return name

    def drop(self, name: str) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return f"{self.server_url}/{name}"


@pytest.fixture(scope="session")
def postgres_admin(postgres_server_url: str) -> Iterator[PostgresAdmin]:
    admin = PostgresAdmin(postgres_server_url)
    try:
        yield admin
    finally:
        admin.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> MigratedTemplate:
    return MigratedTemplate.migrate(f"sqlite:///{tmp_path_factory.mktemp('db') / 'template.db'}")


@pytest.fixture(scope="session")
def postgres_template(postgres_admin: PostgresAdmin) -> Iterator[MigratedTemplate]:
    name = postgres_admin.create("unlearn_test_template")
    try:
        yield MigratedTemplate.migrate(postgres_admin.url(name))
    finally:
        postgres_admin.drop(name)


def _template_name(template: MigratedTemplate) -> str:
    return sa.engine.make_url(template.url).database or ""


def _sqlite_copy(template: MigratedTemplate, path: Path) -> str:
    shutil.copyfile(sa.engine.make_url(template.url).database or "", path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def shared_sqlite_database(
    sqlite_template: MigratedTemplate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedDatabase]:
    url = _sqlite_copy(sqlite_template, tmp_path_factory.mktemp("db") / "shared.db")
    db = SharedDatabase(url, sqlite_template)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(scope="session")
def shared_postgres_database(
    postgres_admin: PostgresAdmin, postgres_template: MigratedTemplate
) -> Iterator[SharedDatabase]:
    name = postgres_admin.create("unlearn_test_shared", template=_template_name(postgres_template))
    db = SharedDatabase(postgres_admin.url(name), postgres_template)
    try:
        yield db
    finally:
        db.close()
        postgres_admin.drop(name)


@pytest.fixture
def shared_sqlite_url(shared_sqlite_database: SharedDatabase) -> Iterator[str]:
    """The session's SQLite database, emptied after the test."""
    try:
        yield shared_sqlite_database.url
    finally:
        shared_sqlite_database.reset()


@pytest.fixture
def shared_postgres_url(shared_postgres_database: SharedDatabase) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test."""
    try:
        yield shared_postgres_database.url
    finally:
        shared_postgres_database.reset()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The session's migrated database of one backend; emptied after the test."""
    return str(request.getfixturevalue(f"shared_{request.param}_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, migrated to head: a copy of the session's template."""
    if request.param == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "fresh.db")
        return
    admin: PostgresAdmin = request.getfixturevalue("postgres_admin")
    template: MigratedTemplate = request.getfixturevalue("postgres_template")
    name = admin.create("unlearn_test", template=_template_name(template))
    try:
        yield admin.url(name)
    finally:
        admin.drop(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own, not yet created."""
    return f"sqlite:///{tmp_path / 'unlearn.db'}"


# --- apps: one per backend and settings, shared by the tests of a session ---------------------


def _rebased(settings: Settings, old: str, new: str) -> Settings:
    """The settings with every path (or URL) under ``old`` moved under ``new``."""
    update: dict[str, Any] = {}
    for name, value in settings:
        if isinstance(value, Path) and str(value).startswith(old):
            update[name] = Path(new + str(value)[len(old) :])
        elif isinstance(value, str) and old in value:
            update[name] = value.replace(old, new)
    return settings.model_copy(update=update)


def _settings_key(settings: Settings) -> str:
    """All the values, secrets included (a dump would mask them: two secrets, one key)."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value for name, value in settings
    }
    return json.dumps(values, sort_keys=True, default=str)


def _files_and_dirs(root: Path) -> tuple[list[Path], set[Path]]:
    files: list[Path] = []
    dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirs.update(Path(dirpath) / d for d in dirnames)
        files.extend(Path(dirpath) / f for f in filenames)
    return files, dirs


@dataclass
class PooledApp:
    client: ApiClient  # entered: holds the lifespan and the event loop the app runs on
    data_dirs: set[Path] = field(default_factory=set)
    # The files the app made under data_dir as it started (the embedded service secret...):
    # path -> (content, mode), put back as they were after each test.
    startup_files: dict[Path, tuple[bytes, int]] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings) -> PooledApp:
        pooled = cls(start_api(settings))
        files, pooled.data_dirs = _files_and_dirs(settings.data_dir)
        pooled.startup_files = {p: (p.read_bytes(), p.stat().st_mode) for p in files}
        return pooled

    def fingerprint(self) -> tuple[Any, ...]:
        """What a test could change on the app and leave for the next one."""
        app, ctx = self.client.app, self.client.ctx
        return (
            _settings_key(ctx.settings),
            {k: id(v) for k, v in vars(ctx).items()},
            {k: id(v) for k, v in app.dependency_overrides.items()},
            {k: id(v) for k, v in getattr(app.state, "_state", {}).items()},
            len(app.router.routes),
            len(app.user_middleware),
        )

    def prepare(self) -> None:
        """The state a freshly started app has: the admin key exists (the database was emptied)."""
        from service.db import session_scope
        from service.keys.logic import bootstrap_admin_key

        with session_scope(self.client.ctx.session_factory) as session:
            bootstrap_admin_key(session, self.client.settings)
        # Folders made so far stay (a cached broker client writes into them).
        self.data_dirs |= _files_and_dirs(self.client.settings.data_dir)[1]

    def clean(self) -> None:
        """Undo what a test stored: artifacts, files under data_dir, HTTP metrics."""
        storage = self.client.ctx.storage
        with contextlib.suppress(FileNotFoundError):
            storage.fs.rm(storage.root, recursive=True)
        if storage.is_local:
            Path(storage.root).mkdir(parents=True, exist_ok=True)
        data_dir = self.client.settings.data_dir
        files, dirs = _files_and_dirs(data_dir)
        for path in files:
            if path not in self.startup_files:
                path.unlink(missing_ok=True)
        self.data_dirs |= dirs
        for path in (data_dir, *sorted(self.data_dirs)):
            path.mkdir(parents=True, exist_ok=True)
        for path, (content, mode) in self.startup_files.items():
            if not path.is_file() or path.read_bytes() != content:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            path.chmod(mode)
        self._reset_http_metrics()

    def _reset_http_metrics(self) -> None:
        from prometheus_client.metrics import MetricWrapperBase

        for middleware in self.client.app.user_middleware:
            for option in middleware.kwargs.values():
                for metric in getattr(option, "__dict__", {}).values():
                    if isinstance(metric, MetricWrapperBase):
                        metric.clear()

    def close(self) -> None:
        self.client.__exit__(None, None, None)


class AppPool:
    """Started apps, one per settings on a shared database, kept for the session.

    A test gets a client of its own on the pooled app (so headers or cookies it sets do not
    leak) that shares the app's event loop. After the test the app's folders and metrics are
    cleaned (the database is emptied by the fixture that handed out its URL); an app the test
    changed (settings, context, dependency overrides, routes, middleware) is closed instead.
    """

    def __init__(self, root: Path, size: int = 8) -> None:
        self.root = root
        self.size = size
        self.apps: OrderedDict[str, PooledApp] = OrderedDict()

    @contextlib.contextmanager
    def client(self, settings: Settings, tmp_path: Path) -> Iterator[ApiClient]:
        if settings.database_url not in SharedDatabase.urls:
            # A database of the test's own (or the default under data_dir): an app of its own too.
            own = start_api(settings)
            try:
                yield own
            finally:
                own.__exit__(None, None, None)
            return
        pooled = self._get(settings, tmp_path)
        pooled.prepare()
        before = pooled.fingerprint()
        client = ApiClient(
            pooled.client.app,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            raise_server_exceptions=False,
        )
        client.portal = pooled.client.portal
        try:
            yield client
        finally:
            client.portal = None
            try:
                pooled.clean()
            finally:
                if pooled.fingerprint() != before:
                    self._evict(pooled)

    def _get(self, settings: Settings, tmp_path: Path) -> PooledApp:
        key = _settings_key(_rebased(settings, str(tmp_path), "<tmp>"))
        pooled = self.apps.get(key)
        if pooled is not None:
            self.apps.move_to_end(key)
            return pooled
        home = self.root / f"app{len(self.apps)}-{uuid.uuid4().hex[:6]}"
        pooled = PooledApp.start(_rebased(settings, str(tmp_path), str(home)))
        self.apps[key] = pooled
        while len(self.apps) > self.size:
            self.apps.popitem(last=False)[1].close()
        return pooled

    def _evict(self, pooled: PooledApp) -> None:
        for key, value in list(self.apps.items()):
            if value is pooled:
                del self.apps[key]
        pooled.close()

    def close(self) -> None:
        while self.apps:
            self.apps.popitem()[1].close()


@pytest.fixture(scope="session")
def app_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppPool]:
    pool = AppPool(tmp_path_factory.mktemp("apps"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    """Override this fixture (or build your own with make_settings) to change settings."""
    return make_settings(tmp_path, database_url=db_url)


@pytest.fixture
def api(api_settings: Settings, tmp_path: Path, app_pool: AppPool) -> Iterator[ApiClient]:
    with app_pool.client(api_settings, tmp_path) as client:
        yield client


@pytest.fixture
def sqlite_api(tmp_path: Path, shared_sqlite_url: str, app_pool: AppPool) -> Iterator[ApiClient]:
    """The API on SQLite only, for tests where the backend does not matter."""
    with app_pool.client(make_settings(tmp_path, database_url=shared_sqlite_url), tmp_path) as client:
        yield client


@pytest.fixture
def make_api(tmp_path: Path, shared_sqlite_url: str, app_pool: AppPool) -> Iterator[Callable[..., ApiClient]]:
    """``make_api(**overrides)``: a client on the API with other settings (``make_settings``'s
    arguments), on the session's SQLite database unless ``database_url`` says otherwise. Apps
    are shared with the tests that ask for the same settings, like ``api``'s."""
    with contextlib.ExitStack() as stack:

        def factory(**overrides: Any) -> ApiClient:
            overrides.setdefault("database_url", shared_sqlite_url)
            return stack.enter_context(app_pool.client(make_settings(tmp_path, **overrides), tmp_path))

        yield factory


# --- tensors built with the engine -----------------------------------------------------------------


def make_checkpoint(architecture: dict[str, Any] | None = None, seed: int = 0) -> bytes:
    import torch

    from unlearning import build_model, state_dict_bytes

    torch.manual_seed(seed)
    return state_dict_bytes(build_model(architecture or MLP_ARCH))


def make_dataset(
    n: int = 32, *, input_dim: int = 64, num_classes: int = 10, seed: int = 0, fmt: str = "safetensors"
) -> bytes:
    import numpy as np
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, input_dim, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    if fmt == "npz":
        buf = io.BytesIO()
        np.savez(buf, inputs=inputs.numpy(), labels=labels.numpy())
        return buf.getvalue()
    return save({"inputs": inputs, "labels": labels})


@pytest.fixture(scope="session")
def mlp_checkpoint() -> bytes:
    return make_checkpoint()


@pytest.fixture
def unique_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"
