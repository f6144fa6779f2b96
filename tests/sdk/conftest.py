"""SDK and CLI tests run against the real service: ``unlearn-service run`` (uvicorn API, one
Celery worker, SQLite, the embedded broker) as a process tree, started once for the session.
Tests share it, so each registers models under names of its own.

- ``server``: the running service (``server.url``, ``server.admin_key``).
- ``proxy``: a :class:`FaultProxy` in front of it that breaks chosen exchanges.
- ``clients``: runs one test body with the sync ``Client`` and with the ``AsyncClient``
  (parametrized), so both executors are checked by the same assertions.
- ``registered``: a model with version 1 (the digits MLP and its eval set), by a fresh name.
- ``digits``: the trained digits MLP from the integration fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from unlearn_client import AsyncClient, Client, RetryPolicy

from tests.integration.conftest import (  # noqa: F401  (digits is a fixture used by the tests here)
    ADMIN_KEY,
    DIGITS_ARCH,
    Digits,
    cmdline,
    descendants,
    digits,
    paused,
)
from tests.sdk.faults import FaultProxy
from tests.service_process import running_service

# Retries without real waits: the policy is the same, only the backoff is short.
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.05, max_backoff=0.2)


@dataclass
class Server:
    url: str
    admin_key: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, self.admin_key, **kwargs)

    def worker_paused(self) -> contextlib.AbstractContextManager[None]:
        """Hold the worker (SIGSTOP) for a block: jobs stay queued until it ends."""
        worker = [p for p in descendants(self.proc.pid) if "worker.celery_app" in cmdline(p)]
        assert worker, "no worker below `unlearn-service run`: " + self.log()
        return paused([q for p in worker for q in (p, *descendants(p))])

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a subprocess that talks to this server (the CLI)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
        return {**env, **extra}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sdk-service")
    with running_service(
        tmp,
        # Webhooks to the tests' own receiver on loopback, given up on (dead) after two quick tries.
        UNLEARN_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        UNLEARN_WEBHOOK_MAX_ATTEMPTS="2",
        UNLEARN_WEBHOOK_BACKOFF_SECONDS="0.2",
        UNLEARN_WEBHOOK_POLL_SECONDS="0.2",
    ) as running:
        yield Server(running.url, ADMIN_KEY, running.data_dir, running.log_path, running.proc)


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    relay = FaultProxy("127.0.0.1", server.port)
    try:
        yield relay
    finally:
        relay.close()


class Clients:
    """Runs ``body(client)`` with a fresh sync or async client, awaiting what the async one
    returns. A body may also be a generator that yields SDK calls and gets their answers back
    (``model = yield c.models.get(name)``): several steps, written once for both clients."""

    def __init__(self, kind: str, server: Server) -> None:
        self.kind = kind
        self.server = server

    def __call__(
        self, body: Callable[[Any], Any], url: str | None = None, api_key: str | None = None, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("retry", FAST_RETRY)
        url = url or self.server.url
        key = api_key or self.server.admin_key
        if self.kind == "sync":
            with Client(url, key, **kwargs) as client:
                result = body(client)
                return _drive(result, lambda answer: answer) if inspect.isgenerator(result) else result

        async def run() -> Any:
            async with AsyncClient(url, key, **kwargs) as client:
                result = body(client)
                if inspect.isgenerator(result):
                    return await _adrive(result)
                return await result if inspect.isawaitable(result) else result

        return asyncio.run(run())


def _drive(steps: Generator[Any, Any, Any], resolve: Callable[[Any], Any]) -> Any:
    answer: Any = None
    while True:
        try:
            answer = resolve(steps.send(answer))
        except StopIteration as stop:
            return stop.value


async def _adrive(steps: Generator[Any, Any, Any]) -> Any:
    answer: Any = None
    while True:
        try:
            call = steps.send(answer)
        except StopIteration as stop:
            return stop.value
        answer = await call if inspect.isawaitable(call) else call


@pytest.fixture(params=["sync", "async"])
def clients(request: pytest.FixtureRequest, server: Server) -> Clients:
    return Clients(request.param, server)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registered(server: Server, digits: Digits) -> str:  # noqa: F811  (the fixture imported above)
    name = unique("digits")
    with server.client() as client:
        client.models.create(name, DIGITS_ARCH, tags=["sdk-test"])
        client.versions.upload(name, digits.checkpoint, digits.eval_set)
    return name
