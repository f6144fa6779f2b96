"""``unlearn-service run`` (uvicorn API, one Celery worker, SQLite, the embedded broker) as a
process tree on a free port, for the tests that drive a real service from outside (the SDK and
CLI tests, the console's browser tests)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.conftest import (
    ADMIN_KEY,
    ROOT,
    TREE_MARKER_ENV,
    kill_process_tree,
    new_tree_marker,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        assert proc.poll() is None, "the service exited: " + log_path.read_text(errors="replace")[-5000:]
        assert time.monotonic() < deadline, "the service did not come up: " + log_path.read_text()[-5000:]
        time.sleep(0.3)


@contextlib.contextmanager
def running_service(tmp: Path, **env_extra: str) -> Iterator[Running]:
    """The service with its data under ``tmp``/var, the tests' admin key, one torch thread and
    quiet logs (plus ``env_extra``), ready (``/readyz`` 200); its whole tree killed afterwards."""
    port = free_port()
    marker = new_tree_marker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
    env.update(
        UNLEARN_DATA_DIR=str(tmp / "var"), UNLEARN_ADMIN_KEY=ADMIN_KEY, UNLEARN_TORCH_THREADS="1",
        UNLEARN_LOG_LEVEL="WARNING", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    env.update(env_extra)
    env[TREE_MARKER_ENV] = marker
    log_path = tmp / "service.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("unlearn-service")), "run", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path)
        yield Running(url, tmp / "var", log_path, proc)
    finally:
        kill_process_tree(proc, marker)
