"""Integration fixtures: a digits MLP trained with the engine, and real Celery worker processes.

Nothing is mocked: workers are ``python -m celery -A worker.celery_app worker`` subprocesses
configured through ``UNLEARN_*`` environment variables, against the real PostgreSQL / Redis
servers (fixtures ``postgres_url`` / ``redis_url``) or the embedded defaults (SQLite, kombu's
filesystem broker, a local artifact folder). Every process a test starts is killed in teardown,
with all its descendants, even those in sessions of their own or orphaned: see
:func:`kill_process_tree`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.settings import Settings
from tests.service_fixtures import ADMIN_KEY, ApiClient, make_settings, start_api

ROOT = Path(__file__).resolve().parents[2]
DIGITS_ARCH: dict[str, Any] = {
    "name": "mlp",
    "config": {"input_dim": 64, "hidden_dims": [64], "num_classes": 10},
}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Digits:
    checkpoint: bytes
    eval_set: bytes
    x_train: Any  # float32 [N, 64] in [0, 1]
    y_train: Any  # int64 [N]
    x_eval: Any
    y_eval: Any
    train_accuracy: float
    eval_accuracy: float

    def samples(self, index: Any) -> dict[str, list]:
        return {"inputs": self.x_train[index].tolist(), "labels": self.y_train[index].tolist()}

    def forget_file(self, index: Any) -> bytes:
        from safetensors.torch import save

        return save({"inputs": self.x_train[index].contiguous(), "labels": self.y_train[index].contiguous()})


@pytest.fixture(scope="session")
def digits() -> Digits:
    """sklearn digits, a 64→64→10 MLP trained to ~100% train accuracy (a few seconds on CPU)."""
    import torch
    from safetensors.torch import save
    from sklearn.datasets import load_digits

    from unlearning import build_model, state_dict_bytes

    torch.set_num_threads(1)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    train, held = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = build_model(DIGITS_ARCH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = x[train], y[train]
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = float((model(xt).argmax(1) == yt).float().mean())
        eval_acc = float((model(x[held]).argmax(1) == y[held]).float().mean())
    assert train_acc > 0.99, train_acc
    return Digits(
        checkpoint=state_dict_bytes(model),
        eval_set=save({"inputs": x[held].contiguous(), "labels": y[held].contiguous()}),
        x_train=xt,
        y_train=yt,
        x_eval=x[held],
        y_eval=y[held],
        train_accuracy=train_acc,
        eval_accuracy=eval_acc,
    )


# --- process trees (Linux /proc) ------------------------------------------------------------------

# Every process a test starts carries this variable with a value of its own, and passes it to the
# processes it starts: teardown finds them all by it, even those that were orphaned and adopted.
TREE_MARKER_ENV = "PYTEST_UNLEARN_PROCESS_TREE"


def new_tree_marker() -> str:
    return uuid.uuid4().hex


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            out[int(entry.name)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: children, grandchildren... whatever session they are in."""
    children: dict[int, list[int]] = defaultdict(list)
    for child, parent in _parents().items():
        children[parent].append(child)
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def marked(marker: str) -> list[int]:
    """The live processes whose environment carries ``marker`` (a zombie's environment is empty)."""
    needle = f"{TREE_MARKER_ENV}={marker}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                    out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def kill_process_tree(proc: subprocess.Popen[bytes], marker: str | None = None, timeout: float = 10) -> None:
    """SIGKILL ``proc``, everything below it and every process carrying ``marker``; reap ``proc``.

    Children in sessions of their own escape ``killpg``, and orphans leave the tree (they are
    adopted by init): so the tree is frozen first (SIGSTOP, so that nothing starts or restarts a
    child meanwhile), collected until nothing new turns up, then killed at once.
    """
    found: set[int] = set()
    for _ in range(50):
        # A reaped child's pid may be reused: follow the tree only while proc is not reaped.
        roots = [proc.pid] if proc.returncode is None else []
        now = {p for root in roots for p in (root, *descendants(root))}
        now |= set(marked(marker)) if marker else set()
        now.discard(os.getpid())
        if not now - found:
            break
        for pid in now - found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        found |= now
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while marker and marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def paused(pids: Iterable[int]) -> Iterator[None]:
    """Hold processes (SIGSTOP) for the block, then let them go on (SIGCONT), whatever happens."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        for pid in stopped:  # SIGSTOP is asynchronous: wait until each one is stopped.
            deadline = time.monotonic() + 5
            while _state(pid) not in ("T", "t", "Z", "gone"):
                assert time.monotonic() < deadline, f"process {pid} did not stop"
                time.sleep(0.01)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def settings_env(settings: Settings) -> dict[str, str]:
    """The UNLEARN_* environment that makes a subprocess see the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, dict | list):
            text = json.dumps(value, default=str)  # pydantic-settings reads complex values as JSON
        else:
            text = str(value)
        env[f"UNLEARN_{name.upper()}"] = text
    env["UNLEARN_TORCH_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    marker: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60) -> Worker:
        """Until Celery logs "ready." (connected, consuming)."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            assert self.alive(), self.log()[-3000:]
            assert time.monotonic() < deadline, "worker not ready: " + self.log()[-3000:]
            time.sleep(0.2)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        kill_process_tree(self.proc, self.marker)  # anything it left behind

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Hold the worker (it takes no message meanwhile): a block may then submit several
        requests that must form one batch, which a live worker could otherwise claim between."""
        assert self.alive(), self.log()[-3000:]
        return paused([self.proc.pid, *descendants(self.proc.pid)])


@dataclass
class Stack:
    """The API in-process (TestClient), workers as subprocesses, all on one Settings."""

    settings: Settings
    api: ApiClient
    tmp_path: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str = "w") -> Worker:
        log_path = self.tmp_path / f"worker-{name}-{len(self.workers)}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "--pool=solo", "--concurrency=1", "--queues=unlearn", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--hostname={name}-{len(self.workers)}@%h",
        ]  # fmt: skip
        marker = new_tree_marker()
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**settings_env(self.settings), TREE_MARKER_ENV: marker},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown kills all of it
            )
        w = Worker(proc, log_path, marker)
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        for w in self.workers:
            w.kill(signal.SIGKILL)

    @contextlib.contextmanager
    def workers_paused(self) -> Iterator[None]:
        """Hold every live worker for the block (see :meth:`Worker.paused`)."""
        with contextlib.ExitStack() as stack:
            for w in self.workers:
                if w.alive():
                    stack.enter_context(w.paused())
            yield

    # -- API helpers ----------------------------------------------------------------------------

    def register_digits(self, digits: Digits, name: str = "digits") -> dict:
        self.api.create_model(name, DIGITS_ARCH)
        r = self.api.upload_version(name, digits.checkpoint, digits.eval_set)
        assert r.status_code == 201, r.text
        return r.json()

    def submit(
        self,
        model: str,
        samples: dict | None = None,
        file: bytes | None = None,
        headers: dict | None = None,
        **fields: Any,
    ) -> Any:
        return submit_deletion(self.api, model, samples, file, headers, **fields)

    def wait_job(
        self, job_id: str, timeout: float = 120, until: Callable[[dict], bool] | None = None
    ) -> dict:
        return wait_for_job(
            self.api, job_id, timeout, until, logs=lambda: "\n".join(w.log()[-3000:] for w in self.workers)
        )


def submit_deletion(
    client: Any,
    model: str,
    samples: dict | None = None,
    file: bytes | None = None,
    headers: dict | None = None,
    **fields: Any,
) -> Any:
    """POST a deletion request: multipart when ``file`` is given, else JSON with inline samples."""
    if file is not None:
        data = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()}
        return client.post(
            f"/v1/models/{model}/deletion-requests",
            files={"forget_set": ("forget.safetensors", file, "application/octet-stream")},
            data=data,
            headers=headers or {},
        )
    return client.post(
        f"/v1/models/{model}/deletion-requests", json={"samples": samples, **fields}, headers=headers or {}
    )


def wait_for_job(
    client: Any,
    job_id: str,
    timeout: float = 120,
    until: Callable[[dict], bool] | None = None,
    logs: Callable[[], str] = lambda: "",
) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if (until or (lambda j: j["status"] in TERMINAL))(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}\nlogs:\n{logs()}")


def backend_urls(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    """``make_stack``'s database and broker URLs for a test parametrized over ``backend``:
    PostgreSQL + Redis for "postgres" (their fixtures fail in CI when a server is missing), none
    (SQLite + the embedded broker) otherwise."""
    if backend != "postgres":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "broker_url": request.getfixturevalue("redis_url"),
    }


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def factory(database_url: str | None = None, broker_url: str | None = None, **overrides: Any) -> Stack:
        settings = make_settings(tmp_path, database_url=database_url, broker_url=broker_url, **overrides)
        stack = Stack(settings=settings, api=start_api(settings), tmp_path=tmp_path)
        stacks.append(stack)
        return stack

    try:
        yield factory
    finally:
        for stack in stacks:
            stack.stop_all()
            stack.api.__exit__(None, None, None)


__all__ = [
    "ADMIN_KEY",
    "DIGITS_ARCH",
    "ROOT",
    "TREE_MARKER_ENV",
    "Digits",
    "Stack",
    "Worker",
    "backend_urls",
    "cmdline",
    "descendants",
    "kill_process_tree",
    "marked",
    "new_tree_marker",
    "paused",
    "settings_env",
    "submit_deletion",
    "wait_for_job",
]
