"""Throughput and latency of the running service: real API and worker processes, driven over HTTP.

For each backend, ``embedded`` (SQLite + kombu's filesystem broker, the defaults) and ``postgres``
(PostgreSQL + Redis, a fresh database per API configuration, created and dropped; one Redis
database index per configuration, flushed before and after), the benchmark starts
``unlearn-service api`` on free localhost ports, one server per **configuration** (each on a
database of its own), and measures them side by side, round after round (the order rotates each
round), so that noise from other work on the machine falls on every configuration alike:

* the configurations: the API as this checkout runs it with 1 process and with ``--workers N``
  processes (production mode); with ``--baseline REF`` also the API of an earlier commit (its
  ``service/``, ``unlearning/``, ``worker/`` and migrations extracted with ``git archive``,
  1 process), so that "before" and "after" are measured in the same run.
* **intake**: deletion requests (2 inline digits samples each, a fresh ``Idempotency-Key`` each,
  as a careful client sends) to one model: 200 over one connection, then ``--requests`` (1000)
  over ``--concurrency`` (32) keep-alive connections. No worker runs, so this is the API's
  validate → store → one-transaction intake alone. Latency is client-side, per request
  (p50/p99/max); the API's CPU time per request (its whole process tree, from /proc) and, on
  PostgreSQL, the database backends' CPU time per request are measured over the same run. The
  requests form one batch; it is cancelled after each run, so every run starts from an empty
  backlog. ``GET /healthz`` over the same connections is the server's floor.
* **reads during uploads**: ``GET /v1/deletion-requests/{id}`` over 4 connections, first alone,
  then while 4 other connections upload forget sets of 1,000 samples as files (each validated by
  the engine before anything is stored); the reads' latency is compared.
* **profile** (``--profile``, after the measured rounds): ``py-spy record --format raw`` on the API
  process tree during one more 32-connection intake run, twice: once sampling every thread that is
  not idle (where the wall time goes: waiting on locks and the database included) and once
  ``--gil`` (only the thread holding the GIL: where the CPU goes). Aggregated by function and by
  part of the intake path (benchmarks/pyspy_summary.py).
* **end-to-end**: ``unlearn-service worker`` is started beside the current 1-process API. Per
  repetition a new model (a digits MLP trained with the engine, version 1 with its eval set)
  receives one deletion request (a safetensors file); timed from the POST to the job's
  ``succeeded`` (polled every 50 ms) and to the new version's checkpoint downloaded (ETag checked).
  Forget sets: ``class`` = every training sample of digit 3 with ``{"scope": "class"}``; ``random``
  = 40 random training samples with the default params. The job's own timestamps split the time
  into queue wait and run.

The client is benchmarks/loadgen.py (raw HTTP/1.1 on asyncio, requests encoded before the clock
starts), not httpx in threads: on 2 cores the client shares the CPU with the server, and it must
cost as little of it as possible.

Run: ``python -m benchmarks.service [--backends embedded postgres] [--requests 1000]
[--concurrency 32] [--rounds 3] [--workers 2] [--baseline REF] [--profile] [--reps 3] [--quick]``.
Writes ``benchmarks/results/service.json`` and the service section of ``benchmarks/RESULTS.md``.
The processes are killed (whole process groups) however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks import (
    host_meta,
    loadgen,
    output_args,
    pyspy_summary,
    run_meta,
    save_json,
    write_section,
)
from service.settings import Settings

# The integration tests' helpers: the same process environment, worker handling and requests as
# the tests use, so the benchmark measures exactly the flow the tests check.
from tests.integration.conftest import (
    ADMIN_KEY,
    DIGITS_ARCH,
    ROOT,
    TERMINAL,
    Digits,
    Worker,
    descendants,
    settings_env,
    submit_deletion,
)
from unlearning import build_model, builtin_data, state_dict_bytes
from unlearning.training import train

PG_SERVER = os.environ.get("UNLEARN_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_HOST = os.environ.get("UNLEARN_BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("UNLEARN_BENCH_REDIS_PORT", "6379"))
BACKENDS = ("embedded", "postgres")
FORGET_CLASS = 3
WARMUP_REQUESTS = 40
SEQUENTIAL_REQUESTS = 200
POLL_S = 0.05  # the integration helper polls every 0.3 s: too coarse for a few-second latency
READERS = 4
UPLOADERS = 4
UPLOAD_SAMPLES = 1000
UPLOADS_PER_RUN = 24
READS_ALONE = 1000
# The targets (docs: "Hardening"): 32 connections, 1000 requests.
TARGET_PG_RPS = 500.0
TARGET_PG_P99_MS = 50.0
TARGET_EMBEDDED_P99_MS = 250.0
TARGET_READ_P99_MS = 50.0
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


# -- data ------------------------------------------------------------------------------------------


def train_digits(seed: int = 0) -> Digits:
    """The integration tests' model: a 64→64→10 MLP memorising sklearn digits (full-batch Adam).

    Built with the engine (``builtin_data.digits`` + ``training.train``); well under a second.
    """
    torch.manual_seed(seed)
    data = builtin_data.digits(seed)
    tr, te = data["train"], data["test"]
    model = build_model(DIGITS_ARCH)
    train(model, tr, epochs=300, lr=1e-2, batch_size=len(tr["labels"]), seed=seed, device="cpu")
    with torch.no_grad():
        train_acc = float((model(tr["inputs"]).argmax(1) == tr["labels"]).float().mean())
        eval_acc = float((model(te["inputs"]).argmax(1) == te["labels"]).float().mean())
    from safetensors.torch import save

    return Digits(
        checkpoint=state_dict_bytes(model),
        eval_set=save({"inputs": te["inputs"].contiguous(), "labels": te["labels"].contiguous()}),
        x_train=tr["inputs"],
        y_train=tr["labels"],
        x_eval=te["inputs"],
        y_eval=te["labels"],
        train_accuracy=train_acc,
        eval_accuracy=eval_acc,
    )


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    pg = httpx.URL(PG_SERVER.replace("postgresql+psycopg", "http"))
    return reachable(pg.host, pg.port or 5432) and reachable(REDIS_HOST, REDIS_PORT)


@contextlib.contextmanager
def backend_urls(backend: str, redis_db: int) -> Iterator[tuple[str, str]]:
    """(database_url, broker_url) of a backend; for postgres a fresh database, dropped afterwards."""
    if backend == "embedded":
        yield "", ""  # Settings' defaults: SQLite and the filesystem broker under data_dir
        return
    import redis
    import sqlalchemy as sa

    name = f"unlearn_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    rds = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    rds.flushdb()  # leftovers of an earlier run would be consumed as this run's messages
    try:
        yield f"{PG_SERVER}/{name}", f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
    finally:
        rds.flushdb()
        rds.close()
        # FORCE: a process killed with SIGKILL may leave its connections open for a moment.
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def bench_settings(workdir: Path, db_url: str, broker_url: str) -> Settings:
    """The service's settings in a benchmark: its data under ``workdir``, the backend's URLs (""
    for the embedded defaults), the benchmark's admin key, quiet logs, one torch thread."""
    return Settings(
        data_dir=workdir / "var",
        database_url=db_url,
        broker_url=broker_url,
        admin_key=ADMIN_KEY,
        log_level="WARNING",
        torch_threads=1,
    )


def extract_code(ref: str, into: Path) -> str:
    """The service's code at ``ref`` (``git archive``; the checkout is not touched); its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        [
            "git",
            "archive",
            "--format=tar",
            commit,
            "service",
            "unlearning",
            "worker",
            "migrations",
            "alembic.ini",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


@dataclass(frozen=True)
class ApiConfig:
    """One way of running the API: whose code, how many processes."""

    key: str  # short id, used in the JSON
    label: str  # for the tables
    processes: int = 1
    code: Path | None = None  # None: this checkout; else a tree extracted by extract_code
    commit: str | None = None


@dataclass
class Service:
    """``unlearn-service api`` and ``worker`` subprocesses on one set of UNLEARN_* settings."""

    settings: Settings
    workdir: Path
    port: int = field(default_factory=free_port)
    procs: list[Worker] = field(default_factory=list)  # Worker: a process group + its log file
    code: Path | None = None  # run this tree's service package instead of the checkout's

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> Worker:
        env = settings_env(self.settings)
        if self.code is not None:
            # The console script imports service.cli: PYTHONPATH's tree comes before the
            # editable install's finder, so the extracted code is what runs.
            env["PYTHONPATH"] = str(self.code)
        cmd = [sys.executable, "-m", "service.cli", *args]
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=self.code or self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes its children too
            )
        handle = Worker(proc, log_path)
        self.procs.append(handle)
        return handle

    def start_api(self, processes: int = 1, timeout: float = 120) -> Worker:
        args = ["api", "--host", "127.0.0.1", "--port", str(self.port)]
        if processes > 1:
            args += ["--workers", str(processes)]
        api = self._spawn("api", *args)
        deadline = time.monotonic() + timeout
        ok = 0
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            # /readyz, not /healthz: intake must not be timed against a half-started backend. Several
            # processes share the port: wait for a run of answers, so that every one is likely up.
            while ok < 4 * processes:
                try:
                    ok = ok + 1 if client.get("/readyz").status_code == 200 else 0
                except httpx.TransportError:
                    ok = 0
                if not api.alive() or time.monotonic() > deadline:
                    raise RuntimeError("the API did not come up:\n" + api.log()[-3000:])
                time.sleep(0.1 if ok else 0.2)
        if processes > 1:
            time.sleep(2.0)
        return api

    def start_worker(self) -> Worker:
        return self._spawn("worker", "worker", "--hostname", f"bench-{self.port}@%h").wait_ready()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill(signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(p.log()[-3000:] for p in self.procs)


def client_for(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=AUTH, timeout=120)


def register(client: httpx.Client, name: str, digits: Digits) -> None:
    r = client.post("/v1/models", json={"name": name, "task": "classification", "architecture": DIGITS_ARCH})
    r.raise_for_status()
    r = client.post(
        f"/v1/models/{name}/versions",
        files={
            "checkpoint": ("model.safetensors", digits.checkpoint, "application/octet-stream"),
            "eval_set": ("eval.safetensors", digits.eval_set, "application/octet-stream"),
        },
    )
    r.raise_for_status()


def percentile(values: list[float], q: int) -> float:
    return loadgen.percentile(sorted(values), q)


# -- CPU accounting (Linux /proc) --------------------------------------------------------------------


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """user + system CPU seconds of each process (one that exited meanwhile is left out)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _postgres_backends(database_url: str) -> list[int]:
    """The PostgreSQL server processes serving this database (their title names it)."""
    if not database_url.startswith("postgresql"):
        return []
    needle = (" " + database_url.rsplit("/", 1)[-1] + " ").encode()
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" "):
                    out.append(int(entry.name))
    return out


@dataclass
class CpuMeter:
    """CPU seconds used over a block by the API's process tree, by the PostgreSQL backends of its
    database and by this (client) process."""

    api_pid: int
    database_url: str

    @contextlib.contextmanager
    def measure(self, out: dict[str, float]) -> Iterator[None]:
        api0 = _cpu_by_pid([self.api_pid, *descendants(self.api_pid)])
        db0 = _cpu_by_pid(_postgres_backends(self.database_url))
        c0 = time.process_time()
        yield
        out["client_cpu_s"] = time.process_time() - c0
        api1 = _cpu_by_pid([self.api_pid, *descendants(self.api_pid)])
        db1 = _cpu_by_pid(_postgres_backends(self.database_url))
        # A process that started during the block counts from 0; one that ended is lost (rare:
        # the API's pool keeps its connections, so their backends live on).
        out["api_cpu_s"] = sum(v - api0.get(p, 0.0) for p, v in api1.items())
        out["db_cpu_s"] = sum(v - db0.get(p, 0.0) for p, v in db1.items())


# -- intake ----------------------------------------------------------------------------------------


@dataclass
class Running:
    """One API configuration, started, with what the measurements need."""

    config: ApiConfig
    service: Service
    api: Worker
    database_url: str
    start_s: float
    gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    request_ids: list[str] = field(default_factory=list)  # for the reads

    @property
    def url(self) -> str:
        return self.service.base_url

    def meter(self) -> CpuMeter:
        return CpuMeter(self.api.proc.pid, self.database_url)


def intake_requests(run: Running, digits: Digits, count: int, tag: str) -> list[loadgen.Request]:
    """Inline deletion requests, encoded before timing (the client's JSON is not the server's cost)."""
    n_train = len(digits.y_train)
    return [
        loadgen.json_request(
            "POST",
            "/v1/models/intake/deletion-requests",
            {
                "samples": digits.samples(torch.randint(n_train, (2,), generator=run.gen)),
                "subject": f"user-{tag}-{i}",
            },
            {**AUTH, "Idempotency-Key": f"bench-{tag}-{i}-{uuid.uuid4().hex[:8]}"},
        )
        for i in range(count)
    ]


def upload_requests(run: Running, digits: Digits, count: int, tag: str) -> list[loadgen.Request]:
    """Forget sets of UPLOAD_SAMPLES samples as safetensors files (multipart), to the model "uploads"."""
    out = []
    for i in range(count):
        idx = torch.randperm(len(digits.y_train), generator=run.gen)[:UPLOAD_SAMPLES]
        out.append(
            loadgen.multipart_request(
                "/v1/models/uploads/deletion-requests",
                files={"forget_set": ("forget.safetensors", digits.forget_file(idx))},
                fields={"subject": f"user-{tag}-{i}"},
                headers={**AUTH, "Idempotency-Key": f"bench-{tag}-{i}-{uuid.uuid4().hex[:8]}"},
            )
        )
    return out


def cancel_queued(run: Running, model: str) -> int:
    """Cancel the model's queued batch: the next run starts from an empty backlog."""
    n = 0
    with client_for(run.url) as client:
        while True:
            page = client.get("/v1/jobs", params={"model": model, "status": "queued", "limit": 100}).json()
            for job in page["items"]:
                client.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
                n += 1
            if not page["items"]:
                return n


def timed(run: Running, groups: list[loadgen.Group]) -> tuple[list[loadgen.Result], dict[str, float]]:
    cpu: dict[str, float] = {}
    with run.meter().measure(cpu):
        results = loadgen.run_mixed(run.url, groups)
    return results, cpu


def with_cpu(summary: dict[str, Any], cpu: dict[str, float]) -> dict[str, Any]:
    n = summary["requests"] or 1
    return summary | {
        "api_cpu_ms_per_request": 1000 * cpu["api_cpu_s"] / n,
        "db_cpu_ms_per_request": 1000 * cpu["db_cpu_s"] / n,
        "client_cpu_ms_per_request": 1000 * cpu["client_cpu_s"] / n,
        "non_2xx": sum(c for s, c in summary["statuses"].items() if not s.startswith("2")),
    }


def measure_round(run: Running, digits: Digits, n: int, concurrency: int, tag: str) -> dict[str, Any]:
    """Healthz, sequential and concurrent intake, reads alone and during uploads: one round."""
    out: dict[str, Any] = {}
    (hz,), cpu = timed(run, [loadgen.Group([loadgen.Request("GET", "/healthz")] * n, concurrency)])
    out["healthz"] = with_cpu(hz.summary(), cpu)
    seq_n = min(SEQUENTIAL_REQUESTS, n)
    (seq,), cpu = timed(run, [loadgen.Group(intake_requests(run, digits, seq_n, f"{tag}s"), 1)])
    out["intake_1"] = with_cpu(seq.summary(), cpu)
    conc_reqs = intake_requests(run, digits, n, f"{tag}c")
    (conc,), cpu = timed(run, [loadgen.Group(conc_reqs, concurrency, keep_bodies=True)])
    out["intake"] = with_cpu(conc.summary(), cpu)
    ids = [json.loads(b)["id"] for b, s in zip(conc.bodies, conc.statuses, strict=True) if s in (200, 202)]
    run.request_ids = ids or run.request_ids
    out["jobs_cancelled"] = cancel_queued(run, "intake")
    reads = [
        loadgen.Request("GET", f"/v1/deletion-requests/{i}", headers=AUTH) for i in run.request_ids[:200]
    ]
    n_alone = min(READS_ALONE, 10 * n)
    (alone,), cpu = timed(run, [loadgen.Group((reads * (n_alone // len(reads) + 1))[:n_alone], READERS)])
    out["reads_alone"] = with_cpu(alone.summary(), cpu)
    uploads = upload_requests(run, digits, max(UPLOADERS, n * UPLOADS_PER_RUN // 1000), f"{tag}u")
    (during, up), cpu = timed(
        run, [loadgen.Group(reads, READERS, repeat=True), loadgen.Group(uploads, UPLOADERS)]
    )
    out["reads_during_uploads"] = during.summary()
    out["uploads"] = with_cpu(up.summary(), cpu)
    cancel_queued(run, "uploads")
    return out


# -- profile ---------------------------------------------------------------------------------------


def profile_intake(
    run: Running, digits: Digits, n: int, concurrency: int, gil: bool, out_path: Path
) -> dict[str, Any]:
    """py-spy on the API's process tree during one more intake run; the aggregated summary."""
    exe = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(exe), "record", "--format", "raw", "--rate", "200", "--nonblocking", "--subprocesses",
        "--pid", str(run.api.proc.pid), "--output", str(out_path),
    ] + (["--gil"] if gil else [])  # fmt: skip
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)  # py-spy attaches (and finds the worker processes) before the load starts
        (res,) = loadgen.run_mixed(
            run.url, [loadgen.Group(intake_requests(run, digits, n, "prof"), concurrency)]
        )
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    cancel_queued(run, "intake")
    if not out_path.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-2000:]}")
    summary = pyspy_summary.summarise(out_path, top=15)
    return {"mode": "gil" if gil else "active threads", "run": res.summary(), **summary}


# -- end-to-end ------------------------------------------------------------------------------------


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def forget_indices(digits: Digits, scenario: str, rep: int) -> tuple[torch.Tensor, dict[str, Any] | None]:
    if scenario == "class":
        return torch.nonzero(digits.y_train == FORGET_CLASS).flatten(), {"scope": "class"}
    gen = torch.Generator().manual_seed(1000 + rep)
    return torch.randperm(len(digits.y_train), generator=gen)[:40], None


def measure_e2e(client: httpx.Client, digits: Digits, scenario: str, rep: int, logs: Any) -> dict[str, Any]:
    """One deletion on a new model: submit → job succeeded → new version downloaded."""
    name = f"e2e-{scenario}-{rep}"
    register(client, name, digits)
    idx, params = forget_indices(digits, scenario, rep)
    fields = {"subject": f"user-{name}"} | ({"params": params} if params else {})
    t0 = time.perf_counter()
    r = submit_deletion(client, name, file=digits.forget_file(idx), **fields)
    t_accepted = time.perf_counter() - t0
    if r.status_code != 202:
        raise RuntimeError(f"deletion request refused: {r.status_code} {r.text}")
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 300
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish: {job}\n{logs()}")
        time.sleep(POLL_S)
    t_done = time.perf_counter() - t0
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')} {job.get('metrics')}\n{logs()}")
    blob = client.get(f"/v1/models/{name}/versions/{job['result_version']}/checkpoint")
    t_download = time.perf_counter() - t0
    if blob.status_code != 200 or blob.headers["etag"].strip('"') != hashlib.sha256(blob.content).hexdigest():
        raise RuntimeError(f"new version not downloadable: {blob.status_code} {blob.headers}")
    metrics = job["metrics"]
    return {
        "model": name,
        "n_samples": len(idx),
        "params": params or {},
        "accepted_s": t_accepted,
        "succeeded_s": t_done,
        "downloaded_s": t_download,
        "queue_wait_s": _ts(job["started_at"]) - _ts(job["created_at"]),
        "run_s": _ts(job["finished_at"]) - _ts(job["started_at"]),
        "engine_s": metrics.get("elapsed_s"),
        "before": metrics.get("before"),
        "after": metrics.get("after"),
        "steps": metrics.get("steps"),
    }


def summarise_e2e(reps: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("accepted_s", "succeeded_s", "downloaded_s", "queue_wait_s", "run_s", "engine_s")
    return {
        f"median_{k}": statistics.median(r[k] for r in reps)
        for k in keys
        if all(r[k] is not None for r in reps)
    } | {
        "n_samples": reps[0]["n_samples"],
        "median_steps": statistics.median(r["steps"] or 0 for r in reps),
        "after_forget_accuracy": statistics.median(r["after"]["forget_accuracy"] for r in reps),
        "after_eval_accuracy": statistics.median(r["after"]["eval_accuracy"] for r in reps),
        "before_eval_accuracy": statistics.median(r["before"]["eval_accuracy"] for r in reps),
    }


# -- one backend -----------------------------------------------------------------------------------


def run_backend(
    backend: str, digits: Digits, args: argparse.Namespace, configs: list[ApiConfig]
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-service-{backend}-")))
        runs: list[Running] = []
        for k, cfg in enumerate(configs):
            db_url, broker_url = stack.enter_context(backend_urls(backend, args.redis_db - k))
            workdir = tmp / cfg.key
            workdir.mkdir()
            settings = bench_settings(workdir, db_url, broker_url)
            service = Service(settings, workdir, code=cfg.code)
            stack.callback(service.stop)  # before its database is dropped (the stack unwinds LIFO)
            t0 = time.perf_counter()
            api = service.start_api(cfg.processes)
            run = Running(cfg, service, api, settings.resolved_database_url, time.perf_counter() - t0)
            runs.append(run)
            print(f"[{backend}] {cfg.label}: up on {run.url} in {run.start_s:.1f}s", flush=True)
            with client_for(run.url) as client:
                register(client, "intake", digits)
                register(client, "uploads", digits)
            loadgen.run(
                run.url, intake_requests(run, digits, min(WARMUP_REQUESTS, args.requests), "warmup"), 8
            )
            cancel_queued(run, "intake")

        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            shift = r % len(runs)  # rotate the order, so no configuration always goes first
            result: dict[str, Any] = {}
            for run in runs[shift:] + runs[:shift]:
                res = measure_round(run, digits, args.requests, args.concurrency, f"r{r}")
                result[run.config.key] = res
                i, rd = res["intake"], res["reads_during_uploads"]
                print(
                    f"[{backend}] round {r} {run.config.label}: intake {i['requests_per_s']:.0f} req/s "
                    f"p50 {i['p50_ms']:.1f} p99 {i['p99_ms']:.1f} ms, "
                    f"API CPU {i['api_cpu_ms_per_request']:.2f} ms/req, DB {i['db_cpu_ms_per_request']:.2f}; "
                    f"1 conn {res['intake_1']['requests_per_s']:.0f} req/s; "
                    f"reads p99 alone {res['reads_alone']['p99_ms']:.1f}, during uploads "
                    f"{rd['p99_ms']:.1f} ms; healthz {res['healthz']['requests_per_s']:.0f} req/s",
                    flush=True,
                )
            rounds.append(result)

        profiles: dict[str, dict[str, Any]] = {}
        if args.profile:
            for run in runs:
                profiles[run.config.key] = {}
                for gil in (False, True):
                    path = tmp / f"profile-{run.config.key}-{'gil' if gil else 'active'}.txt"
                    prof = profile_intake(run, digits, args.requests, args.concurrency, gil, path)
                    profiles[run.config.key]["gil" if gil else "active"] = prof
                    top = ", ".join(f"{n.split(' (')[0]} {100 * s:.0f}%" for n, s in prof["categories"][:4])
                    print(f"[{backend}] profile {run.config.label} ({prof['mode']}): {top}", flush=True)

        e2e: dict[str, Any] = {}
        if args.reps > 0:
            primary = next(r for r in runs if r.config.code is None and r.config.processes == 1)
            primary.service.start_worker()
            with client_for(primary.url) as client:
                for scenario in args.scenarios:
                    reps = []
                    for rep in range(args.reps):
                        reps.append(measure_e2e(client, digits, scenario, rep, primary.service.logs))
                        last = reps[-1]
                        print(
                            f"[{backend}] e2e {scenario} rep {rep}: succeeded {last['succeeded_s']:.2f}s, "
                            f"downloaded {last['downloaded_s']:.2f}s",
                            flush=True,
                        )
                    e2e[scenario] = {"summary": summarise_e2e(reps), "reps": reps}
    summary = {run.config.key: summarise_rounds([r[run.config.key] for r in rounds]) for run in runs}
    primary_key = next(r.config.key for r in runs if r.config.code is None and r.config.processes == 1)
    first = rounds[0][primary_key]
    return {
        "configs": {
            run.config.key: {
                "label": run.config.label,
                "processes": run.config.processes,
                "commit": run.config.commit,
                "api_start_s": run.start_s,
            }
            for run in runs
        },
        "rounds": rounds,
        "summary": summary,
        "profiles": profiles,
        # The first version's shape (one client, then N): the current 1-process API, round 0.
        "intake": [
            {
                **first["intake_1"],
                "clients": 1,
                "non_202": first["intake_1"]["requests"] - first["intake_1"]["statuses"].get("202", 0),
            },
            {
                **first["intake"],
                "clients": args.concurrency,
                "non_202": first["intake"]["requests"] - first["intake"]["statuses"].get("202", 0),
            },
        ],
        "api_start_s": runs[0].start_s,
        "e2e": e2e,
    }


def summarise_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of the figures the tables show (and each round's, for honesty)."""

    def med(part: str, key: str) -> float:
        return statistics.median(r[part][key] for r in rounds)

    def each(part: str, key: str) -> list[float]:
        return [r[part][key] for r in rounds]

    out: dict[str, Any] = {"rounds": len(rounds)}
    for part, keys in {
        "intake": (
            "requests_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "api_cpu_ms_per_request",
            "db_cpu_ms_per_request",
            "client_cpu_ms_per_request",
            "non_2xx",
        ),
        "intake_1": ("requests_per_s", "p50_ms", "p99_ms", "api_cpu_ms_per_request", "db_cpu_ms_per_request"),
        "healthz": ("requests_per_s", "p50_ms", "p99_ms", "api_cpu_ms_per_request"),
        "reads_alone": ("p50_ms", "p99_ms", "requests_per_s"),
        "reads_during_uploads": ("p50_ms", "p99_ms", "requests_per_s", "requests"),
        "uploads": ("p50_ms", "p99_ms", "requests_per_s", "api_cpu_ms_per_request", "non_2xx"),
    }.items():
        out[part] = {k: med(part, k) for k in keys} | {
            f"each_{k}": each(part, k) for k in ("requests_per_s", "p99_ms")
        }
    return out


# -- report ----------------------------------------------------------------------------------------


def _cfg_rows(result: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    for backend, res in result["backends"].items():
        for key, cfg in res["configs"].items():
            yield backend, key, cfg, res["summary"][key]


def _each(values: list[float], fmt: str = "{:.0f}") -> str:
    return " / ".join(fmt.format(v) for v in values)


def cpu_ceiling(s: dict[str, Any], cpus: int) -> float:
    """Requests/s the machine's cores allow at the measured CPU cost per request, with no waiting."""
    ms = s["api_cpu_ms_per_request"] + s["db_cpu_ms_per_request"] + s["client_cpu_ms_per_request"]
    return cpus * 1000 / ms if ms > 0 else float("inf")


def production_key(res: dict[str, Any], backend: str) -> str:
    """How the current code is deployed on this backend: PostgreSQL + Redis is production, with
    the most API processes; embedded is what ``unlearn-service run`` starts, one API process
    (SQLite takes one write lock for the whole database, and processes waiting for it back off
    in sleeps of up to 100 ms: more processes lengthen the tail)."""
    current = [(c["processes"], k) for k, c in res["configs"].items() if c["commit"] is None]
    return min(current)[1] if backend == "embedded" else max(current)[1]


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    meta, rows = result["meta"], []
    conc, cpus = meta["concurrency"], meta["cpus"]
    for backend, res in result["backends"].items():
        key = production_key(res, backend)
        s = res["summary"][key]
        label = f"{backend}, {res['configs'][key]['label']}"
        i = s["intake"]
        ceiling = cpu_ceiling(i, cpus)
        # Little's law for a closed loop of `conc` connections: mean latency = conc / throughput.
        little_ms = 1000 * conc / i["requests_per_s"]
        cpu_why = (
            f"the API used {i['api_cpu_ms_per_request']:.2f} ms of CPU per request, PostgreSQL "
            f"{i['db_cpu_ms_per_request']:.2f} ms and the client {i['client_cpu_ms_per_request']:.2f} ms: "
            f"{cpus} cores allow at most {ceiling:.0f} requests/s at that cost, with no waiting at all"
        )
        if backend == "postgres":
            met = i["requests_per_s"] >= TARGET_PG_RPS
            rows.append({
                "target": f"PostgreSQL + Redis, {conc} connections: ≥ {TARGET_PG_RPS:.0f} requests/s",
                "config": label,
                "measured": f"{i['requests_per_s']:.0f} requests/s "
                f"(rounds: {_each(i['each_requests_per_s'])})",
                "met": met,
                "why": "" if met else cpu_why,
            })  # fmt: skip
            met = i["p99_ms"] < TARGET_PG_P99_MS
            rows.append({
                "target": f"PostgreSQL + Redis, {conc} connections: p99 < {TARGET_PG_P99_MS:.0f} ms",
                "config": label,
                "measured": f"p99 {i['p99_ms']:.1f} ms (rounds: {_each(i['each_p99_ms'], '{:.1f}')})",
                "met": met,
                "why": "" if met else (
                    f"with {conc} requests always in flight, the mean latency is {conc} / throughput "
                    f"= {little_ms:.0f} ms at {i['requests_per_s']:.0f} requests/s (Little's law); a p99 "
                    f"under {TARGET_PG_P99_MS:.0f} ms needs more than {1000 * conc / TARGET_PG_P99_MS:.0f} "
                    f"requests/s, and {cpu_why}"
                ),
            })  # fmt: skip
        else:
            met = i["p99_ms"] < TARGET_EMBEDDED_P99_MS
            rows.append({
                "target": f"embedded, {conc} connections: p99 < {TARGET_EMBEDDED_P99_MS:.0f} ms",
                "config": label,
                "measured": f"p99 {i['p99_ms']:.1f} ms (rounds: {_each(i['each_p99_ms'], '{:.1f}')}), "
                f"{i['requests_per_s']:.0f} requests/s",
                "met": met,
                "why": "" if met else (
                    f"mean latency = {conc} / throughput = {little_ms:.0f} ms (Little's law); {cpu_why}; "
                    "SQLite takes one write lock for every transaction"
                ),
            })  # fmt: skip
        rd, up = s["reads_during_uploads"], s["uploads"]
        met = rd["p99_ms"] < TARGET_READ_P99_MS
        rows.append({
            "target": f"{backend}: reads p99 < {TARGET_READ_P99_MS:.0f} ms while uploads are validated",
            "config": label,
            "measured": f"p99 {rd['p99_ms']:.1f} ms (rounds: {_each(rd['each_p99_ms'], '{:.1f}')}; "
            f"alone {s['reads_alone']['p99_ms']:.1f} ms)",
            "met": met,
            "why": "" if met else (
                f"each upload of {UPLOAD_SAMPLES} samples costs the API "
                f"{up['api_cpu_ms_per_request']:.0f} ms "
                f"of CPU (parse, validate, digest, store); {UPLOADERS} at a time keep {cpus} cores busy, "
                "and a read waits for a core (and, within a process, for the GIL)"
            ),
        })  # fmt: skip
    return rows


def _profile_tables(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for backend, res in result["backends"].items():
        if not res["profiles"]:
            continue
        keys = list(res["profiles"])
        labels = [res["configs"][k]["label"] for k in keys]
        for mode, title in (
            ("gil", "CPU: samples of the thread holding the GIL (`py-spy --gil`)"),
            (
                "active",
                "wall time: samples of every thread not idle (waiting on the database and locks included)",
            ),
        ):
            cats: dict[str, dict[str, float]] = {}
            for k in keys:
                for name, share in res["profiles"][k][mode]["categories"]:
                    cats.setdefault(name, {})[k] = share
            order = sorted(cats, key=lambda n: -max(cats[n].values()))
            lines += [
                "",
                f"**{backend}, {title}**; share of samples by part of the intake path (the innermost "
                "matching frame decides)",
                "",
                "| part | " + " | ".join(labels) + " |",
                "|---|" + "---:|" * len(keys),
            ]
            lines += [
                f"| {n} | " + " | ".join(f"{100 * cats[n].get(k, 0):.1f}%" for k in keys) + " |"
                for n in order
            ]
            lines.append(
                "| (requests/s of the profiled run) | "
                + " | ".join(f"{res['profiles'][k][mode]['run']['requests_per_s']:.0f}" for k in keys)
                + " |"
            )
        for k in keys:
            prof = res["profiles"][k]["gil"]
            top = "; ".join(f"`{n}` {100 * s:.1f}%" for n, s in prof["self"][:10])
            label = res["configs"][k]["label"]
            lines += ["", f"Top functions by own CPU samples (`--gil`), {backend}, {label}: {top}."]
    return lines


# What changed between the baseline commit of the committed run (4e36b10) and this checkout's
# intake path, found with the profiles below (README of the section; the figures are measured).
FIXES = [
    "**Group commit** (`service/db.py` `GroupCommit`, used by `service/deletions/logic.py`): an "
    "intake holds the model's row lock and its tenant's audit-chain lock until it commits, and a "
    "commit waits for the disk, so one transaction per request serialised a model's intake behind "
    "one fsync each (a locked insert-and-commit loop alone reached about 150–240 transactions/s "
    "on this machine). The intakes that arrive while one transaction runs are now written in the "
    "next, with one lock acquisition, one flush (multi-row INSERTs of requests, audit events and "
    "idempotency records; the chain head updated once) and one commit; a failing request is "
    "rolled back with its batch and the others written again, a failed commit retried request by "
    "request (a duplicate Idempotency-Key then fails alone, and replays).",
    "**Once per transaction**: the model's row lock, the audit chain head's lock "
    "(`service/audit/logic.py`), the open batch to join and the tenant's backlog count.",
    "**Read transactions** (`service/db.py` `read_scope`): authentication (`service/deps.py`, "
    "`service/auth.py`: the key's last use is written apart, at most once a minute), the intake's "
    "reads and `GET /v1/deletion-requests…` read in autocommit on PostgreSQL (no BEGIN/COMMIT round "
    "trips) and in a DEFERRED transaction on SQLite (no write lock: a read waits for no writer).",
    "**Fewer thread-pool hops** (`service/deps.py`): dependencies that do no I/O are coroutines; the "
    "request's session commits through the pool only when the route used it.",
    "**Connection pool** (`service/db.py`): 20 connections kept per process (was 10, with 20 more "
    "opened and closed on demand): under load the API's 40 threads closed every connection beyond "
    "10 on its return, over 800 PostgreSQL sessions opened (a backend forked and authenticated "
    "each) in one round of about 3,000 requests.",
    "**Several API processes** (`unlearn-service api --workers N`, or `UNLEARN_API_WORKERS`; "
    "`service/cli.py` migrates once before they start): one Python process uses one core at most.",
]


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    conc, n, cpus = meta["concurrency"], meta["requests"], meta["cpus"]
    lines = [
        "## Service: intake throughput and end-to-end latency",
        "",
        f"Generated by `{meta['command']}` on {meta['timestamp']} ({cpus} CPU cores shared with other "
        f"work running at the same time: load average {meta['loadavg_start']:.1f} at the start, "
        f"{meta['loadavg_end']:.1f} at the end, so compare configurations within this run rather than "
        f"with other runs; torch {meta['torch']}, 1 torch thread per process; client, API, database "
        "and worker on the same machine). Real processes: `unlearn-service api` (uvicorn; reconciler, "
        "webhook and audit-signing threads on) and `unlearn-service worker` (solo pool), configured by "
        "`UNLEARN_*` variables. `embedded` = SQLite + the filesystem broker; `postgres` = PostgreSQL + "
        "Redis. Each API configuration runs on a database of its own; the configurations are measured "
        f"side by side, {meta['rounds']} round(s), the order rotating each round. Client: "
        "benchmarks/loadgen.py (keep-alive HTTP/1.1 on asyncio, requests encoded beforehand)."
        + (f" Skipped: {', '.join(meta['skipped'])}." if meta["skipped"] else ""),
        "",
        "Configurations: "
        + "; ".join(
            sorted(
                {
                    f"**{c['label']}**"
                    + (f" = the code of commit `{c['commit'][:10]}`" if c["commit"] else " = this checkout")
                    + f", {c['processes']} process(es)"
                    for _, _, c, _ in _cfg_rows(result)
                }
            )
        )
        + ".",
        "",
        f"### Intake: {n} deletion requests over {conc} connections (median of the rounds)",
        "",
        "`POST /v1/models/{name}/deletion-requests` with 2 inline digits samples and a fresh "
        "`Idempotency-Key` each, all to one model (they join one open batch, cancelled after each run). "
        "No worker runs. Latency per request, measured by the client. CPU ms/request: CPU time of the "
        "API's process tree, of the PostgreSQL backends serving its database and of the client over "
        f"the run, divided by the requests; CPU ceiling = {cpus} cores / (their sum): the most requests/s "
        "this machine could serve at that cost with no waiting. `/healthz` over the same connections "
        "is the server's floor.",
        "",
        "| backend | API | requests/s | per round | p50 ms | p99 ms | max ms | API CPU ms/req | "
        "PostgreSQL CPU ms/req | client CPU ms/req | CPU ceiling req/s | non-2xx | /healthz req/s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, _key, cfg, s in _cfg_rows(result):
        i = s["intake"]
        lines.append(
            f"| {backend} | {cfg['label']} | {i['requests_per_s']:.0f} | {_each(i['each_requests_per_s'])} | "
            f"{i['p50_ms']:.1f} | {i['p99_ms']:.1f} | {i['max_ms']:.0f} | "
            f"{i['api_cpu_ms_per_request']:.2f} | {i['db_cpu_ms_per_request']:.2f} | "
            f"{i['client_cpu_ms_per_request']:.2f} | {cpu_ceiling(i, cpus):.0f} | "
            f"{i['non_2xx']:g} | {s['healthz']['requests_per_s']:.0f} |"
        )
    base = {b: [k for k, c in r["configs"].items() if c["commit"]] for b, r in result["backends"].items()}
    ratios = []
    for backend, res in result["backends"].items():
        for bk in base[backend]:
            for key, cfg in res["configs"].items():
                if cfg["commit"] is None:
                    per = [
                        r[key]["intake"]["requests_per_s"] / r[bk]["intake"]["requests_per_s"]
                        for r in res["rounds"]
                    ]
                    ratios.append(
                        f"{backend}: {cfg['label']} / {res['configs'][bk]['label']} = "
                        f"{statistics.median(per):.1f}× ({_each(per, '{:.1f}')})"
                    )
    if ratios:
        lines += [
            "",
            "Throughput ratios, round by round (median, then each round): " + "; ".join(ratios) + ".",
        ]
    lines += [
        "",
        f"### Intake over one connection ({min(SEQUENTIAL_REQUESTS, n)} requests, median of the rounds)",
        "",
        "| backend | API | connections | requests/s | p50 ms | p99 ms | API CPU ms/req | "
        "PostgreSQL CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, _key, cfg, s in _cfg_rows(result):
        i = s["intake_1"]
        lines.append(
            f"| {backend} | {cfg['label']} | 1 | {i['requests_per_s']:.0f} | {i['p50_ms']:.1f} | "
            f"{i['p99_ms']:.1f} | "
            f"{i['api_cpu_ms_per_request']:.2f} | {i['db_cpu_ms_per_request']:.2f} |"
        )
    lines += [
        "",
        "### Reads while uploads are validated (median of the rounds)",
        "",
        f"`GET /v1/deletion-requests/{{id}}` over {READERS} connections: {READS_ALONE} reads alone, then "
        f"reads for as long as {UPLOADERS} other connections upload forget sets of {UPLOAD_SAMPLES} digits "
        "samples each (safetensors files, multipart; parsed, validated and digested by the engine, then "
        "stored, before the request is written).",
        "",
        "| backend | API | reads alone p50 / p99 ms | reads during uploads p50 / p99 ms | "
        "reads during uploads | "
        "uploads/s | upload p50 / p99 ms | API CPU ms/upload |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for backend, _key, cfg, s in _cfg_rows(result):
        a, d, u = s["reads_alone"], s["reads_during_uploads"], s["uploads"]
        lines.append(
            f"| {backend} | {cfg['label']} | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | {d['p50_ms']:.1f} / "
            f"{d['p99_ms']:.1f} | {d['requests']:.0f} | {u['requests_per_s']:.1f} | {u['p50_ms']:.0f} / "
            f"{u['p99_ms']:.0f} | {u['api_cpu_ms_per_request']:.0f} |"
        )
    lines += [
        "",
        "### What changed (measured above as `before` → `current`)",
        "",
        *[f"- {fix}" for fix in FIXES],
        "",
        "### Targets (as each backend is deployed: PostgreSQL + Redis with the most API processes, "
        "embedded with one, as `unlearn-service run` starts it)",
        "",
        "| target | configuration | measured (median of the rounds) | met | why not |",
        "|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(
            f"| {t['target']} | {t['config']} | {t['measured']} | "
            f"{'met' if t['met'] else '**missed**'} | {t['why']} |"
        )
    prof_lines = _profile_tables(result)
    if prof_lines:
        lines += [
            "",
            f"### Where the intake's time goes: py-spy on the API processes under the {conc}-connection load",
            "",
            "`py-spy record --format raw --subprocesses` on the API's process tree during one more run of "
            f"{n} requests after the measured rounds, aggregated by benchmarks/pyspy_summary.py. Parts: "
            "the innermost frame that matches a part decides (so a database call made by the audit "
            "append counts as database driver).",
            *prof_lines,
        ]
    e2e_lines = _e2e_markdown(result)
    return "\n".join(lines + e2e_lines) + "\n"


def _e2e_markdown(result: dict[str, Any]) -> list[str]:
    meta = result["meta"]
    if not any(r["e2e"] for r in result["backends"].values()):
        return []
    lines = [
        "",
        f"### End-to-end latency (median of {meta['reps']} repetition(s), a new model each)",
        "",
        "The current code, 1 API process, and one worker. A digits MLP (64→64→10, trained with the "
        f"engine to {meta['digits']['train_accuracy']:.3f} train / "
        f"{meta['digits']['eval_accuracy']:.3f} eval "
        "accuracy) registered with its eval set; one deletion request (safetensors file) per model. "
        f'`class` = all training samples of digit {FORGET_CLASS}, params `{{"scope": "class"}}`; '
        '`random` = 40 random training samples, default params (`{"preset": "adaptive"}`). '
        "Accepted = the 202; succeeded = the job seen `succeeded` (polled every "
        f"{int(POLL_S * 1000)} ms); downloaded = the new version's checkpoint fetched and its ETag "
        "checked. Queue wait and run come from the job's own timestamps; engine = the method's "
        "time as the job reports it (`metrics.elapsed_s`), steps = its ascent steps. The embedded "
        "broker is kombu's filesystem transport, which polls its folder every "
        f"{Settings().embedded_broker_polling_seconds} s "
        "(setting `UNLEARN_EMBEDDED_BROKER_POLLING_SECONDS`): most of its queue wait.",
        "",
        "| backend | forget set | samples | accepted s | succeeded s | downloaded s | queue wait s | "
        "run s | engine s | steps | forget acc after | eval acc before → after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for backend, res in result["backends"].items():
        for scenario, e in res["e2e"].items():
            s = e["summary"]
            lines.append(
                f"| {backend} | {scenario} | {s['n_samples']} | {s['median_accepted_s']:.3f} | "
                f"{s['median_succeeded_s']:.2f} | {s['median_downloaded_s']:.2f} | "
                f"{s['median_queue_wait_s']:.2f} | {s['median_run_s']:.2f} | "
                f"{s.get('median_engine_s', float('nan')):.2f} | {s['median_steps']:g} | "
                f"{s['after_forget_accuracy']:.3f} | "
                f"{s['before_eval_accuracy']:.3f} → {s['after_eval_accuracy']:.3f} |"
            )
    cold = ", ".join(
        f"{b} {next(iter(r['e2e'].values()))['reps'][0]['succeeded_s']:.2f} s"
        for b, r in result["backends"].items()
        if r["e2e"]
    )
    lines += [
        "",
        "Eval accuracy counts the forgotten class too, so class forgetting lowers it by about that "
        "class's share (the policy measures utility on the other classes). API start (process spawn "
        "→ `/readyz` 200): "
        + ", ".join(
            f"{b} {c['label']} {c['api_start_s']:.1f} s"
            for b, r in result["backends"].items()
            for c in r["configs"].values()
        )
        + f". First job after the worker started (cold: imports, torch's first run; in the medians): {cold}.",
    ]
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=None, help="default: both when reachable"
    )
    parser.add_argument("--requests", type=int, default=1000, help="intake requests per concurrent run")
    parser.add_argument("--concurrency", type=int, default=32, help="connections of the concurrent run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of measurements per configuration")
    parser.add_argument(
        "--workers", type=int, default=2, help="API processes of the production configuration"
    )
    parser.add_argument("--baseline", default=None, help="also run the API of this git commit (1 process)")
    parser.add_argument("--profile", action="store_true", help="py-spy the API under the intake load")
    parser.add_argument(
        "--reps", type=int, default=3, help="end-to-end repetitions (a new model each); 0: none"
    )
    parser.add_argument("--scenarios", nargs="+", choices=("class", "random"), default=None)
    parser.add_argument(
        "--redis-db", type=int, default=13, help="Redis database index (flushed); one less per configuration"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20 requests, 8 connections, 1 round, embedded only"
    )
    output_args(parser, render="measure nothing: write the section from this service.json")
    args = parser.parse_args(argv)

    if args.render is not None:
        rendered: dict[str, Any] = json.loads(args.render.read_text())
        rendered["targets"] = evaluate_targets(rendered)
        write_section(args.results_md, "service", markdown(rendered))
        return rendered
    if args.quick:
        args.requests, args.concurrency, args.rounds, args.reps, args.workers = 20, 8, 1, 1, 1
        args.backends = args.backends or ["embedded"]
        args.scenarios = args.scenarios or ["class"]
    args.scenarios = args.scenarios or ["class", "random"]
    skipped: list[str] = []
    if args.backends is None:
        args.backends = ["embedded"]
        if postgres_available():
            args.backends.append("postgres")
        else:
            skipped.append("postgres (PostgreSQL or Redis not reachable)")
            print("postgres backend skipped: PostgreSQL or Redis not reachable", flush=True)
    elif "postgres" in args.backends and not postgres_available():
        parser.error("--backends postgres: PostgreSQL or Redis is not reachable")

    torch.set_num_threads(1)
    started = time.perf_counter()
    loadavg_start = os.getloadavg()[0]
    digits = train_digits()
    with tempfile.TemporaryDirectory(prefix="bench-service-code-") as code_tmp:
        configs = [ApiConfig("current-1", "current, 1 process")]
        if args.workers > 1:
            configs.append(
                ApiConfig(f"current-{args.workers}", f"current, {args.workers} processes", args.workers)
            )
        if args.baseline:
            commit = extract_code(args.baseline, Path(code_tmp))
            configs.insert(
                0, ApiConfig("baseline", f"before ({commit[:7]}), 1 process", 1, Path(code_tmp), commit)
            )
        backends = {b: run_backend(b, digits, args, configs) for b in args.backends}
    result: dict[str, Any] = {
        "meta": {
            **run_meta("benchmarks.service", argv, started),
            "quick": args.quick,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "workers": args.workers,
            "baseline": args.baseline,
            "reps": args.reps,
            "scenarios": args.scenarios,
            "skipped": skipped,
            **host_meta(loadavg_start),
            "digits": {"train_accuracy": digits.train_accuracy, "eval_accuracy": digits.eval_accuracy},
        },
        "backends": backends,
    }
    result["targets"] = evaluate_targets(result)
    save_json(args.out_dir, "service.json", result)
    write_section(args.results_md, "service", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
