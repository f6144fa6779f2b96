"""Throughput and latency of the running service: real API and worker processes, driven over HTTP.

For each backend, ``embedded`` (SQLite + kombu's filesystem broker, the defaults) and ``postgres``
(PostgreSQL + Redis, a fresh database created and dropped, one Redis database index flushed before
and after), the benchmark starts ``unlearn-service api`` on a free localhost port and then:

* **intake**: N deletion requests (2 inline digits samples each, a fresh ``Idempotency-Key`` each,
  as a careful client sends) to one model, first one after the other from one client, then from 8
  client threads (each with its own connection). No worker runs yet, so the numbers are the API's
  validate → store → one-transaction intake alone, not the API competing with unlearning for the
  CPU. Latency is client-side, per request; a few warm-up requests are not counted.
* **end-to-end**: the queued intake batch is cancelled and ``unlearn-service worker`` is started.
  Per repetition a new model (a digits MLP trained with the engine, version 1 with its eval set)
  receives one deletion request (a safetensors file); timed from the POST to the job's
  ``succeeded`` (polled every 50 ms) and to the new version's checkpoint downloaded (ETag checked).
  Forget sets: ``class`` = every training sample of digit 3 with ``{"scope": "class"}``; ``random``
  = 40 random training samples with the default params (on this memorised model the job has to
  take steps for those too). The job's own timestamps split the time into queue wait and run.

Run: ``python -m benchmarks.service [--backends embedded postgres] [--requests 200] [--reps 3]
[--quick]``. Writes ``benchmarks/results/service.json`` and the service section of
``benchmarks/RESULTS.md``. The processes are killed (whole process groups) however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks import RESULTS_DIR, RESULTS_MD, write_section
from service.settings import Settings

# The integration tests' helpers: the same process environment, worker handling and requests as
# the tests use, so the benchmark measures exactly the flow the tests check.
from tests.integration.conftest import (
    ADMIN_KEY,
    DIGITS_ARCH,
    TERMINAL,
    Digits,
    Worker,
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
WARMUP_REQUESTS = 5
POLL_S = 0.05  # the integration helper polls every 0.3 s: too coarse for a few-second latency


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


@dataclass
class Service:
    """``unlearn-service api`` and ``worker`` subprocesses on one set of UNLEARN_* settings."""

    settings: Settings
    workdir: Path
    port: int = field(default_factory=free_port)
    procs: list[Worker] = field(default_factory=list)  # Worker: a process group + its log file

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> Worker:
        exe = Path(sys.executable).with_name("unlearn-service")
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [str(exe), *args],
                cwd=self.workdir,
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes its children too
            )
        handle = Worker(proc, log_path)
        self.procs.append(handle)
        return handle

    def start_api(self, timeout: float = 60) -> Worker:
        api = self._spawn("api", "api", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    # /readyz, not /healthz: intake must not be timed against a half-started backend.
                    if client.get("/readyz").status_code == 200:
                        return api
                if not api.alive() or time.monotonic() > deadline:
                    raise RuntimeError("the API did not come up:\n" + api.log()[-3000:])
                time.sleep(0.2)

    def start_worker(self) -> Worker:
        return self._spawn("worker", "worker", "--hostname", f"bench-{self.port}@%h").wait_ready()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill(signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(p.log()[-3000:] for p in self.procs)


def client_for(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)


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


# -- intake ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def intake_run(base_url: str, model: str, payloads: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """POST every payload, split over ``concurrency`` threads with a client (connection) each."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    clients = [client_for(base_url) for _ in range(concurrency)]
    # Connections are opened before the clock starts: the benchmark is about the API, not TCP.
    for c in clients:
        c.get("/healthz")
    barrier = threading.Barrier(concurrency + 1)

    def work(k: int) -> None:
        barrier.wait()
        for p in payloads[k::concurrency]:
            t0 = time.perf_counter()
            r = submit_deletion(
                clients[k],
                model,
                samples=p["samples"],
                headers={"Idempotency-Key": p["key"]},
                subject=p["subject"],
            )
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                statuses.append(r.status_code)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return {
        "clients": concurrency,
        "requests": len(payloads),
        "wall_s": wall,
        "requests_per_s": len(payloads) / wall,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "max_ms": 1000 * max(latencies),
        "non_202": sum(s != 202 for s in statuses),
        "statuses": sorted(set(statuses)),
    }


def measure_intake(
    base_url: str, digits: Digits, n: int, concurrency: int, seed: int
) -> tuple[list[dict[str, Any]], int]:
    """Sequential and concurrent intake on the model "intake"; returns the runs and the jobs left."""
    gen = torch.Generator().manual_seed(seed)
    n_train = len(digits.y_train)

    def payloads(count: int, tag: str) -> list[dict[str, Any]]:
        # Built before timing: the client's JSON encoding of the samples is not the server's cost.
        return [
            {
                "samples": digits.samples(torch.randint(n_train, (2,), generator=gen)),
                "key": f"bench-{tag}-{i}-{uuid.uuid4().hex[:8]}",
                "subject": f"user-{tag}-{i}",
            }
            for i in range(count)
        ]

    with client_for(base_url) as client:
        register(client, "intake", digits)
    intake_run(base_url, "intake", payloads(WARMUP_REQUESTS, "warmup"), 1)
    runs = [intake_run(base_url, "intake", payloads(n, "seq"), 1)]
    runs.append(intake_run(base_url, "intake", payloads(n, f"c{concurrency}"), concurrency))
    # The batch the requests formed must not occupy the worker during the end-to-end runs.
    with client_for(base_url) as client:
        queued = client.get("/v1/jobs", params={"model": "intake", "status": "queued", "limit": 100}).json()
        for job in queued["items"]:
            client.post(f"/v1/jobs/{job['id']}/cancel")
    return runs, len(queued["items"])


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
    backend: str, digits: Digits, n: int, concurrency: int, reps: int, scenarios: list[str], redis_db: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-service-{backend}-") as tmp,
        backend_urls(backend, redis_db) as (db_url, broker_url),
    ):
        workdir = Path(tmp)
        settings = Settings(
            data_dir=workdir / "var",
            database_url=db_url,
            broker_url=broker_url,
            admin_key=ADMIN_KEY,
            log_level="WARNING",
            torch_threads=1,
        )
        service = Service(settings, workdir)
        try:
            t0 = time.perf_counter()
            service.start_api()
            api_start_s = time.perf_counter() - t0
            print(f"[{backend}] API up on {service.base_url} in {api_start_s:.1f}s; intake ...", flush=True)
            intake, cancelled = measure_intake(service.base_url, digits, n, concurrency, seed=0)
            for run in intake:
                print(
                    f"[{backend}] intake, {run['clients']} client(s): {run['requests_per_s']:.1f} req/s, "
                    f"p50 {run['p50_ms']:.1f} ms, p95 {run['p95_ms']:.1f} ms, non-202 {run['non_202']}",
                    flush=True,
                )
            service.start_worker()
            e2e: dict[str, Any] = {}
            with client_for(service.base_url) as client:
                for scenario in scenarios:
                    runs = []
                    for rep in range(reps):
                        runs.append(measure_e2e(client, digits, scenario, rep, service.logs))
                        last = runs[-1]
                        print(
                            f"[{backend}] e2e {scenario} rep {rep}: succeeded {last['succeeded_s']:.2f}s, "
                            f"downloaded {last['downloaded_s']:.2f}s",
                            flush=True,
                        )
                    e2e[scenario] = {"summary": summarise_e2e(runs), "reps": runs}
        finally:
            service.stop()
    return {"api_start_s": api_start_s, "intake": intake, "intake_jobs_cancelled": cancelled, "e2e": e2e}


# -- report ----------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "## Service: intake throughput and end-to-end latency",
        "",
        f"Generated by `{meta['command']}` on {meta['timestamp']} ({meta['cpus']} CPU cores shared with "
        f"other work running at the same time, so treat the numbers as a lower bound; torch "
        f"{meta['torch']}, 1 torch thread per process; client, API and worker on the same machine). "
        "Real processes: `unlearn-service api` (uvicorn, 1 process, reconciler thread on) and "
        "`unlearn-service worker` (solo pool, concurrency 1), configured by `UNLEARN_*` variables. "
        "`embedded` = SQLite + the filesystem broker; `postgres` = PostgreSQL + Redis."
        + (f" Skipped: {', '.join(meta['skipped'])}." if meta["skipped"] else ""),
        "",
        f"### Intake ({meta['requests']} requests per row)",
        "",
        "`POST /v1/models/{name}/deletion-requests` with 2 inline digits samples, a fresh "
        "`Idempotency-Key` each, all to one model (they join one open batch). **No worker is running "
        "during intake** (it is started afterwards), so this is the API alone. Latency measured by "
        f"the client per request; {WARMUP_REQUESTS} warm-up requests not counted.",
        "",
        "| backend | client threads | requests/s | p50 ms | p95 ms | max ms | non-202 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, res in result["backends"].items():
        for run in res["intake"]:
            lines.append(
                f"| {backend} | {run['clients']} | {run['requests_per_s']:.1f} | {run['p50_ms']:.1f} | "
                f"{run['p95_ms']:.1f} | {run['max_ms']:.1f} | {run['non_202']} |"
            )
    lines += [
        "",
        f"### End-to-end latency (median of {meta['reps']} repetition(s), a new model each)",
        "",
        "A digits MLP (64→64→10, trained with the engine to "
        f"{meta['digits']['train_accuracy']:.3f} train / {meta['digits']['eval_accuracy']:.3f} eval "
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
    # The median hides the worker's cold start (lazy imports, torch's first run): shown apart.
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
        + ", ".join(f"{b} {r['api_start_s']:.1f} s" for b, r in result["backends"].items())
        + f". First job after the worker started (cold: imports, torch's first run; in the medians): {cold}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=None, help="default: both when reachable"
    )
    parser.add_argument("--requests", type=int, default=200, help="intake requests per row")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads of the concurrent row")
    parser.add_argument("--reps", type=int, default=3, help="end-to-end repetitions (a new model each)")
    parser.add_argument("--scenarios", nargs="+", choices=("class", "random"), default=None)
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database index (flushed)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 requests, 1 rep, embedded only")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    args = parser.parse_args(argv)

    if args.quick:
        args.requests, args.reps = 20, 1
        args.backends = args.backends or ["embedded"]
        args.scenarios = args.scenarios or ["class"]
    scenarios = args.scenarios or ["class", "random"]
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
    digits = train_digits()
    backends = {
        b: run_backend(b, digits, args.requests, args.concurrency, args.reps, scenarios, args.redis_db)
        for b in args.backends
    }
    result = {
        "meta": {
            "command": " ".join(["python -m benchmarks.service", *(sys.argv[1:] if argv is None else argv)]),
            "quick": args.quick,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "reps": args.reps,
            "scenarios": scenarios,
            "skipped": skipped,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "total_s": time.perf_counter() - started,
            "digits": {"train_accuracy": digits.train_accuracy, "eval_accuracy": digits.eval_accuracy},
        },
        "backends": backends,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section(args.results_md, "service", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
