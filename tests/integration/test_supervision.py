"""`unlearn-service run` supervises its children: they die with it, and a crashed worker restarts.

A real process tree: the supervisor, the API (uvicorn) and the Celery worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ADMIN_KEY, ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def _wait(condition: Callable[[], bool], seconds: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{logs()[-4000:]}"
        time.sleep(0.2)


@dataclass
class Tree:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pid(self) -> int | None:
        for pid in _children(self.proc.pid):
            if " worker" in _cmdline(pid) and _alive(pid):
                return pid
        return None

    def api_pid(self) -> int | None:
        for pid in _children(self.proc.pid):
            if " api " in _cmdline(pid) and _alive(pid):
                return pid
        return None


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
    env.update(
        UNLEARN_DATA_DIR=str(tmp_path / "var"), UNLEARN_ADMIN_KEY=ADMIN_KEY, UNLEARN_TORCH_THREADS="1",
        UNLEARN_LOG_LEVEL="INFO", PYTHONPATH=str(ROOT),
        # Stray variables that Celery's command line would read: they must not stop the worker.
        APP="no.such.module", BROKER_URL="redis://127.0.0.1:1/0", CELERY_APP="no.such.module",
    )  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    t = Tree(proc, log, port)
    try:
        _wait(lambda: "ready." in t.logs(), 90, "the worker to be ready", t.logs)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return client.get("/healthz").status_code == 200
                return False

            _wait(up, 60, "the API", t.logs)
        yield t
    finally:
        pids = [proc.pid, *_children(proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_stray_celery_variables_do_not_stop_the_worker(tree: Tree) -> None:
    pid = tree.worker_pid()
    assert pid is not None, tree.logs()
    assert "worker.celery_app" in _cmdline(pid)
    assert "restarting" not in tree.logs()  # it started the first time


def test_a_crashed_worker_is_restarted_and_the_api_stays_up(tree: Tree) -> None:
    first = tree.worker_pid()
    api = tree.api_pid()
    assert first is not None and api is not None
    os.kill(first, signal.SIGKILL)
    _wait(lambda: (p := tree.worker_pid()) is not None and p != first, 30, "a new worker", tree.logs)
    assert tree.api_pid() == api
    with httpx.Client(base_url=f"http://127.0.0.1:{tree.port}", timeout=5) as client:
        assert client.get("/healthz").status_code == 200


def test_children_die_with_the_supervisor_even_on_sigkill(tree: Tree) -> None:
    children = _children(tree.proc.pid)
    assert len(children) == 2, tree.logs()
    os.kill(tree.proc.pid, signal.SIGKILL)
    tree.proc.wait(timeout=10)
    _wait(lambda: not any(_alive(pid) for pid in children), 15, "the children to die", tree.logs)
