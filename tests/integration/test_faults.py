"""Random faults over 20 deletion jobs: workers SIGKILLed mid-job, Redis flushed, the API killed.

PostgreSQL + Redis, real processes: two Celery workers and a uvicorn API (``unlearn-service
api``) that takes the 20 requests; the in-process app of ``make_stack`` only reads state and runs
``reconcile_once`` (the test is the reconciler, with a short lease and stale-outbox delay).

The fault plan comes from a seed (``UNLEARN_FAULT_SEED`` replays one): which request's intake the
API is SIGKILLed in (and how many milliseconds after the request was sent), after how many
finished jobs each worker kill and the FLUSHDB happen, which running job's worker dies and how long
until a replacement starts. Kills are triggered by conditions (a job of attempt 1 mid-run, past
loading), not by wall-clock time, so a slow machine only stretches the test. What really happened
(with timings) is printed with the seed when an assertion fails.

Then, whatever happened: every request completed exactly once (one job each, every job succeeded,
one ``job.succeeded`` audit event per job), each model's versions form one chain, the audit chain
verifies, nothing is left queued or running, no model is locked and no forget set is left.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
import torch
from sqlalchemy import func, select

from service.db import session_scope
from service.reconciler import reconcile_once
from service.tables import AuditEvent, DeletionRequest, Job, Model, ModelVersion
from tests.integration.conftest import (
    ADMIN_KEY,
    ROOT,
    TREE_MARKER_ENV,
    Digits,
    Stack,
    Worker,
    kill_process_tree,
    new_tree_marker,
    settings_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(420)]

N_JOBS = 20
N_WORKERS = 2
N_WORKER_KILLS = 4
# ~8000 tiny steps (16 samples, batches of 2, no early stop): about a second of work per job, long
# enough for a kill to land mid-run, short enough for 20 jobs and their retries.
PARAMS = {"preset": "official", "epochs": 1000, "batch_size": 2, "lr": 1e-5}
POLICY = {"require_forgetting": False}  # orchestration, not forgetting quality, is under test
DEADLINE_S = 300.0  # from the first request to the last job's end; generous for a busy machine


@dataclass
class Plan:
    """The seeded fault schedule."""

    seed: int
    api_kill_request: int  # index of the request whose intake the API is killed during
    api_kill_delay_ms: int  # after the request was sent
    submit_gaps_s: list[float]  # pause before each request
    kill_after_done: list[int]  # a worker kill once this many jobs have ended
    kill_pick: list[float]  # which running job's worker (a fraction into the sorted running list)
    kill_extra_s: list[float]  # how long after the job is seen mid-run the kill lands
    restart_after_s: list[float]  # how long until a replacement worker starts
    flush_after_done: int  # FLUSHDB once this many jobs have ended

    @classmethod
    def make(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        return cls(
            seed=seed,
            api_kill_request=rng.randrange(2, N_JOBS - 2),
            api_kill_delay_ms=rng.randrange(0, 150),  # before, during or after the commit
            submit_gaps_s=[round(rng.uniform(0.0, 0.5), 2) for _ in range(N_JOBS)],
            kill_after_done=sorted(rng.sample(range(0, 14), N_WORKER_KILLS)),
            kill_pick=[round(rng.random(), 3) for _ in range(N_WORKER_KILLS)],
            # Up to about a job's length: the kill lands anywhere from mid-run to publishing (or after).
            kill_extra_s=[round(rng.uniform(0.0, 1.2), 2) for _ in range(N_WORKER_KILLS)],
            restart_after_s=[rng.choice([0.0, 1.0, 3.0]) for _ in range(N_WORKER_KILLS)],
            flush_after_done=rng.randrange(2, 16),
        )


@dataclass
class Journal:
    """What happened, with times since the first request: printed with the seed on failure."""

    t0: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, text: str) -> None:
        with self.lock:
            self.lines.append(f"{time.monotonic() - self.t0:7.2f}s  {text}")

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiProcess:
    """``unlearn-service api`` (uvicorn) as a process of its own, which can be SIGKILLed."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.proc: subprocess.Popen[bytes] | None = None
        self.marker = ""
        self.port = 0
        self.starts = 0

    def start(self, timeout: float = 90) -> None:
        self.port = _free_port()
        self.marker = new_tree_marker()
        log_path = self.stack.tmp_path / f"api-{self.starts}.log"
        self.starts += 1
        cmd = [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**settings_env(self.stack.settings), TREE_MARKER_ENV: self.marker},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "API not up: " + log_path.read_text(errors="replace")[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc is not None:
            kill_process_tree(self.proc, self.marker)


def _post(api: ApiProcess, body: dict, key: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/models/{body['_model']}/deletion-requests",
        json={k: v for k, v in body.items() if k != "_model"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Idempotency-Key": key},
        timeout=timeout,
    )


def _submit_all(api: ApiProcess, bodies: list[dict], plan: Plan, journal: Journal, out: list) -> None:
    """The client: each request once, with an Idempotency-Key; the API is SIGKILLed during one
    request's intake and restarted, and that request is sent again with the same key."""
    for i, body in enumerate(bodies):
        time.sleep(plan.submit_gaps_s[i])
        key = f"fault-{plan.seed}-{i}"
        if i == plan.api_kill_request:
            result: list[Any] = []

            def send(body: dict = body, key: str = key, result: list[Any] = result) -> None:
                try:
                    result.append(_post(api, body, key))
                except httpx.HTTPError as exc:
                    result.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(plan.api_kill_delay_ms / 1000)
            api.kill()
            sender.join(timeout=60)
            first = result[0] if result else "no answer"
            got = first.status_code if isinstance(first, httpx.Response) else repr(first)
            journal.note(f"API SIGKILLed {plan.api_kill_delay_ms} ms into request {i}'s intake; "
                         f"the client got {got}")  # fmt: skip
            api.start()
            journal.note("API restarted")
        for attempt in itertools.count():
            try:
                r = _post(api, body, key)
                break
            except httpx.HTTPError as exc:  # the restarted API is up (start() waited): be patient
                assert attempt < 5, f"request {i}: {exc!r}"
                time.sleep(1.0)
        assert r.status_code == 202, (i, r.status_code, r.text)
        if i == plan.api_kill_request:
            replayed = r.headers.get("Idempotent-Replayed") == "true"
            journal.note(f"request {i} sent again: " + ("replayed (its intake had committed before the kill)"
                         if replayed else "accepted anew (the kill rolled its intake back)"))  # fmt: skip
        out.append(r.json())
    journal.note(f"all {len(bodies)} requests accepted")


def _jobs(stack: Stack) -> list[Job]:
    with session_scope(stack.api.ctx.session_factory) as s:
        jobs = list(s.scalars(select(Job)))
        s.expunge_all()
    return jobs


def _worker_of(stack: Stack, lease_owner: str | None) -> Worker | None:
    """The live worker holding a lease: its owner id is ``host:pid:nonce`` (worker/tasks.py)."""
    if not lease_owner:
        return None
    pid = int(lease_owner.split(":")[1])
    return next((w for w in stack.workers if w.alive() and w.proc.pid == pid), None)


def _run_faults(
    stack: Stack, plan: Plan, journal: Journal, redis_url: str, submitter: threading.Thread
) -> None:
    """Drive the faults and the reconciler until every job has ended (or the deadline passes)."""
    kills = list(range(N_WORKER_KILLS))
    restarts: list[tuple[float, str]] = []  # (when, name)
    flushed = False
    last_reconcile = 0.0
    deadline = time.monotonic() + DEADLINE_S
    while True:
        now = time.monotonic()
        assert now < deadline, "jobs did not all end in time"
        jobs = _jobs(stack)
        done = sum(j.status in ("succeeded", "failed", "cancelled") for j in jobs)
        if not submitter.is_alive() and len(jobs) == N_JOBS and done == N_JOBS and not kills and flushed:
            break
        if kills and done >= plan.kill_after_done[N_WORKER_KILLS - len(kills)]:
            k = N_WORKER_KILLS - len(kills)
            # Mid-run: past loading, not yet publishing, first attempt (a job killed twice would
            # still succeed, but max_attempts is then the test's margin, not the service's).
            mid = sorted(
                (j for j in jobs if j.status == "running" and j.attempts == 1 and 0.1 < j.progress < 0.9
                 and _worker_of(stack, j.lease_owner) is not None),
                key=lambda j: j.id,
            )  # fmt: skip
            if mid:
                job = mid[min(int(plan.kill_pick[k] * len(mid)), len(mid) - 1)]
                worker = _worker_of(stack, job.lease_owner)
                assert worker is not None
                time.sleep(plan.kill_extra_s[k])
                worker.kill(signal.SIGKILL)
                kills.pop(0)
                with session_scope(stack.api.ctx.session_factory) as s:
                    at_kill = s.get(Job, job.id)
                    assert at_kill is not None
                    state = f"{at_kill.status}, progress {at_kill.progress:.2f}"
                journal.note(f"kill {k}: SIGKILL worker pid {worker.proc.pid} {plan.kill_extra_s[k]}s after "
                             f"seeing {job.id} at progress {job.progress:.2f} (then: {state}; "
                             f"{done} jobs ended)")  # fmt: skip
                restarts.append((time.monotonic() + plan.restart_after_s[k], f"r{k}"))
            elif done >= N_JOBS - 2 and not submitter.is_alive():
                kills.pop(0)  # cannot happen on a machine this fast: nothing is left to kill mid-run
                journal.note(f"kill {N_WORKER_KILLS - len(kills) - 1}: skipped, no job left mid-run")
        for when, name in [r for r in restarts if r[0] <= time.monotonic()]:
            restarts.remove((when, name))
            stack.start_worker(name)
            journal.note(f"replacement worker {name} started ({sum(w.alive() for w in stack.workers)} alive)")
        if not flushed and done >= plan.flush_after_done:
            client = redis.Redis.from_url(redis_url)
            try:
                size = client.dbsize()
                client.flushdb()
            finally:
                client.close()
            flushed = True
            journal.note(f"FLUSHDB ({size} keys lost, {done} jobs ended)")
        if time.monotonic() - last_reconcile >= 1.0:
            stats = reconcile_once(stack.api.ctx)
            last_reconcile = time.monotonic()
            if any(
                stats.get(k)
                for k in ("requeued", "failed_expired", "locks_released", "published", "republished")
            ):
                journal.note("reconcile: " + ", ".join(f"{k}={v}" for k, v in stats.items() if v))
        time.sleep(0.1)
    journal.note("every job ended")


def test_random_faults_over_20_jobs(
    make_stack: Any, postgres_url: str, redis_url: str, digits: Digits
) -> None:
    seed = int(os.environ.get("UNLEARN_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    plan = Plan.make(seed)
    journal = Journal()
    api_proc: ApiProcess | None = None
    t_start = time.monotonic()
    try:
        stack: Stack = make_stack(
            database_url=postgres_url,
            broker_url=redis_url,
            job_lease_seconds=4.0,
            job_heartbeat_seconds=0.5,
            reconcile_stale_outbox_seconds=4.0,
            forget_set_retention_seconds=0.0,
        )
        names = [f"digits-{i:02d}" for i in range(N_JOBS)]
        for name in names:
            stack.register_digits(digits, name)
        workers = [stack.start_worker(f"w{i}") for i in range(N_WORKERS)]
        api_proc = ApiProcess(stack)
        api_proc.start()
        for w in workers:
            w.wait_ready()
        # 16 distinct training samples per request (so each request's digests are its own).
        perm = torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(seed))
        bodies = [
            {"_model": name, "samples": digits.samples(perm[16 * i : 16 * i + 16]), "subject": f"s{i}",
             "method": "imu", "params": PARAMS, "policy": POLICY}
            for i, name in enumerate(names)
        ]  # fmt: skip
        journal = Journal()
        journal.note(f"set up in {journal.t0 - t_start:.1f}s; seed {seed}")
        accepted: list[dict] = []
        submit_error: list[BaseException] = []

        def submit() -> None:
            try:
                _submit_all(api_proc, bodies, plan, journal, accepted)
            except BaseException as exc:  # surfaced in the main thread
                submit_error.append(exc)
                journal.note(f"client failed: {exc!r}")

        submitter = threading.Thread(target=submit, name="client")
        submitter.start()
        try:
            _run_faults(stack, plan, journal, redis_url, submitter)
        finally:
            submitter.join(timeout=120)
        assert not submit_error, submit_error[0]
        assert len(accepted) == N_JOBS
        reconcile_once(stack.api.ctx)  # the last purge pass, as the background loop would run it
        _check(stack, accepted, journal)
        print(f"\n[faults] seed {seed}: {N_JOBS} jobs under faults in {time.monotonic() - journal.t0:.1f}s "
              f"(set-up {journal.t0 - t_start:.1f}s)\n{journal.text()}")  # fmt: skip
    except BaseException as exc:
        replay = f"\nreplay with UNLEARN_FAULT_SEED={seed}\nplan: {plan}\nwhat happened:\n{journal.text()}"
        print(replay)
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}{replay}") from exc
        raise
    finally:
        if api_proc is not None:
            api_proc.kill()


def _check(stack: Stack, accepted: list[dict], journal: Journal) -> None:
    api = stack.api
    ctx = api.ctx
    with session_scope(ctx.session_factory) as s:
        requests = list(s.scalars(select(DeletionRequest)))
        jobs = {j.id: j for j in s.scalars(select(Job))}
        succeeded = Counter(
            s.scalars(select(AuditEvent.object_id).where(AuditEvent.action == "job.succeeded"))
        )
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.model_id, ModelVersion.version)))
        models = {m.id: m for m in s.scalars(select(Model))}
        n_requeued = s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "job.requeued")
        )
        summary = [(j.id, j.status, j.attempts, (j.error or {}).get("type")) for j in jobs.values()]
        s.expunge_all()
    journal.note(
        f"{n_requeued} requeues; attempts {sorted(Counter(j.attempts for j in jobs.values()).items())}"
    )

    # Every request exactly once: the API's restart and the client's retry made no second request.
    assert len(requests) == N_JOBS, [r.subject for r in requests]
    assert sorted(r["id"] for r in accepted) == sorted(r.id for r in requests)
    assert all(r.status == "completed" and r.result_version == 2 for r in requests), [
        (r.subject, r.status, r.error) for r in requests if r.status != "completed"
    ]
    # One job per request (distinct models), each succeeded once.
    assert len(jobs) == N_JOBS, summary
    assert sorted(str(r.job_id) for r in requests) == sorted(jobs), (
        "no request in two jobs, no job without one"
    )
    assert all(j.status == "succeeded" for j in jobs.values()), summary
    assert all(1 <= j.attempts <= j.max_attempts for j in jobs.values()), summary
    assert succeeded == Counter(dict.fromkeys(jobs, 1)), f"job.succeeded events per job: {succeeded}"
    # Nothing left behind: no job queued or running, no model locked, no forget set stored.
    assert not [j for j in jobs.values() if j.status in ("queued", "running")]
    assert all(m.lock_job_id is None for m in models.values()), "a model is still locked"
    assert all(r.forget_set_key is None and r.forget_set_purged_at is not None for r in requests)
    assert ctx.storage.keys("forget-sets") == [], ctx.storage.keys("forget-sets")
    # Each model: one chain (v1 uploaded, v2 from its one job, parent v1).
    by_model: dict[str, list[ModelVersion]] = {}
    for v in versions:
        by_model.setdefault(v.model_id, []).append(v)
    assert len(by_model) == N_JOBS
    job_of_model = {j.model_id: j for j in jobs.values()}
    for model_id, chain in by_model.items():
        assert [v.version for v in chain] == list(range(1, len(chain) + 1))
        for prev, cur in itertools.pairwise(chain):
            assert cur.parent_version == prev.version, (
                model_id,
                [(v.version, v.parent_version) for v in chain],
            )
        job = job_of_model[model_id]
        assert len(chain) == 2 and chain[1].created_by_job == job.id, (model_id, job.id, len(chain))
        assert (job.base_version, job.result_version) == (1, 2)
        assert models[model_id].latest_version == 2
    r = api.get("/v1/audit/verify")
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    # The API's in-process view agrees with the database (a sample of the public answers).
    for a in accepted[:3]:
        got = api.get(f"/v1/deletion-requests/{a['id']}").json()
        assert got["status"] == "completed" and got["forget_set_purged"] is True, got


@pytest.mark.timeout(120)
def test_claim_tenant_lock_does_not_block_publish(make_stack: Any, postgres_url: str, digits: Digits) -> None:
    """Found by the fault test: a publish and a claim of one tenant deadlocked on PostgreSQL.

    A claim locks the tenant row (``check_fair_share``: ``SELECT ... FOR UPDATE``) and then appends
    to the tenant's audit chain. A publish updates its job row twice in one transaction (status,
    then ``result_version``) after appending to that chain (version.created...): the second UPDATE
    of a row this transaction already changed re-checks the foreign key ``jobs.tenant_id``, i.e.
    ``SELECT 1 FROM tenants ... FOR KEY SHARE``, which waits for the claim's FOR UPDATE while the
    claim waits for the audit head: "deadlock detected ... while locking tuple (0,1) in relation
    tenants" in the worker, the job requeued (an attempt spent) or, out of attempts, failed.
    Claims need only serialise among themselves: FOR NO KEY UPDATE does that without blocking the
    foreign-key checks of the tenant's rows.
    """
    from sqlalchemy import text, update
    from sqlalchemy.exc import OperationalError

    from service.jobs.fairness import check_fair_share

    stack: Stack = make_stack(database_url=postgres_url)
    stack.register_digits(digits)
    r = stack.submit("digits", samples=digits.samples(slice(0, 4)))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    factory = stack.api.ctx.session_factory
    with session_scope(factory) as s:
        tenant_id = s.scalar(select(Job.tenant_id).where(Job.id == job_id))
    assert tenant_id is not None
    claimer, publisher = factory(), factory()
    try:
        check_fair_share(claimer, tenant_id, 100)  # the claim of another job of the tenant, mid-way
        publisher.execute(text("SET LOCAL lock_timeout = '3s'"))
        publisher.execute(update(Job).where(Job.id == job_id).values(stage="publish"))
        try:
            # As publish_result's second UPDATE of its job row (result_version).
            publisher.execute(update(Job).where(Job.id == job_id).values(progress=0.99))
        except OperationalError as exc:
            pytest.fail(f"the publish waited for the claim's tenant lock (a deadlock once the claim "
                        f"waits for the audit head the publish holds): {exc.orig!r}")  # fmt: skip
        publisher.commit()
    finally:
        publisher.rollback()
        publisher.close()
        claimer.rollback()
        claimer.close()
