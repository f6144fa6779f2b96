"""Fixtures for tests of the service (app, database, keys). Loaded by tests/conftest.py.

Generic on purpose: the jobs/integration tests reuse them.

- ``make_settings(tmp_path, database_url=..., broker_url=..., **overrides)``: Settings rooted in tmp_path
  (SQLite file, embedded filesystem broker, local artifact folder unless overridden).
- ``db_url`` fixture: a fresh database URL, parametrized "sqlite" / "postgres".
- ``api`` fixture: an :class:`ApiClient` (a started TestClient) on ``db_url``, authorised with the
  bootstrap admin key; ``api.anonymous()``, ``api.with_key(headers)``, ``api.new_key(scopes, tenant=)``.
- ``mlp_checkpoint`` / ``make_checkpoint`` / ``make_dataset``: safetensors bytes built with the engine.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

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


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'unlearn.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'unlearn.db'}"


def start_api(settings: Settings) -> ApiClient:
    from service.app import create_app

    client = ApiClient(
        create_app(settings),
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        raise_server_exceptions=False,
    )
    client.__enter__()  # runs the lifespan: migrations, admin key
    return client


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    """Override this fixture (or build your own with make_settings) to change settings."""
    return make_settings(tmp_path, database_url=db_url)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[ApiClient]:
    client = start_api(api_settings)
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[ApiClient]:
    """The API on SQLite only, for tests where the backend does not matter."""
    client = start_api(make_settings(tmp_path))
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


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
