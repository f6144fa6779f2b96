"""Concurrency and failure: many clients at once, a worker killed mid-job, a broker that lost its queue."""

from __future__ import annotations

import itertools
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import torch

from service.reconciler import reconcile_once
from tests.integration.conftest import Digits, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

# Slow on purpose (no early stop, thousands of tiny steps): long enough to kill the worker mid-run.
SLOW_PARAMS = {"preset": "official", "epochs": 1000, "batch_size": 2, "lr": 1e-5}  # within the bounds
LENIENT = {"require_forgetting": False}
# Smaller relative steps checked after every step: many small sequential jobs on one model must not
# overshoot (the 2% default step can, once earlier jobs already weakened the class).
GENTLE_PARAMS = {"preset": "adaptive", "lr": 0.005, "check_every": 1}
# This test is about orchestration; a batch of two samples can need a bigger utility loss to reach
# "forget accuracy ≤ eval accuracy" than the default 0.05 (quality is checked in test_end_to_end).
ORCHESTRATION_POLICY = {"max_eval_accuracy_drop": 0.2}


def test_concurrent_requests_form_one_chain(
    make_stack, postgres_url: str, redis_url: str, digits: Digits
) -> None:
    stack: Stack = make_stack(database_url=postgres_url, broker_url=redis_url)
    stack.register_digits(digits)
    # Two workers: the per-model lock, not a single consumer, must keep jobs of one model apart.
    workers = [stack.start_worker("a"), stack.start_worker("b")]
    for w in workers:
        w.wait_ready()
    n = 20
    # Class-3 training samples, two per request (distinct, so digests identify each request's samples).
    perm = torch.nonzero(digits.y_train == 3).flatten()[: 2 * n]

    def one(i: int) -> dict:
        # Spread over ~3 s so that some requests join open batches and others arrive while jobs run.
        time.sleep(0.15 * i)
        r = stack.submit(
            "digits",
            samples=digits.samples(perm[2 * i : 2 * i + 2]),
            subject=f"s{i}",
            params=GENTLE_PARAMS,
            policy=ORCHESTRATION_POLICY,
        )
        assert r.status_code == 202, r.text
        return r.json()

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        requests = list(pool.map(one, range(n)))
    intake_s = time.monotonic() - t0
    job_ids = sorted({r["job_id"] for r in requests})
    jobs = [stack.wait_job(j, timeout=180) for j in job_ids]
    assert all(j["status"] == "succeeded" for j in jobs), [
        (j["status"], j["error"], (j["metrics"] or {}).get("policy"), (j["metrics"] or {}).get("after"))
        for j in jobs
        if j["status"] != "succeeded"
    ]
    total_s = time.monotonic() - t0
    assert len(jobs) >= 2, "requests arriving while a job runs form the next batch"
    print(f"\n[concurrency] {n} requests in {intake_s:.2f}s ({n / intake_s:.1f}/s), {len(jobs)} jobs, "
          f"all done after {total_s:.2f}s")  # fmt: skip

    for r in requests:
        got = stack.api.get(f"/v1/deletion-requests/{r['id']}").json()
        assert got["status"] == "completed" and got["result_version"] is not None

    # Every request's samples are in exactly one job, and every job ran exactly the requests it lists.
    seen: dict[str, str] = {}
    for j in jobs:
        for rid in j["deletion_requests"]:
            assert rid not in seen, f"request {rid} in two jobs"
            seen[rid] = j["id"]
    assert set(seen) == {r["id"] for r in requests}
    events = stack.api.get("/v1/audit", params={"action": "job.succeeded", "limit": 200}).json()["items"]
    assert len(events) == len(jobs)
    digests = [d for e in events for d in e["payload"]["sample_digests"]]
    submitted = [
        d
        for r in requests
        for d in stack.api.get(f"/v1/deletion-requests/{r['id']}/sample-digests").json()["sample_digests"]
    ]
    assert sorted(digests) == sorted(submitted)
    assert len(set(digests)) == len(digests) == 2 * n

    # The versions form one chain: each version's parent is the one before it, one per job.
    versions = stack.api.get("/v1/models/digits/versions", params={"limit": 200}).json()["items"]
    versions.sort(key=lambda v: v["version"])
    assert [v["version"] for v in versions] == list(range(1, len(jobs) + 2))
    for prev, cur in itertools.pairwise(versions):
        assert cur["parent_version"] == prev["version"]
    assert sorted(v["created_by_job"] for v in versions[1:]) == job_ids
    for j in jobs:
        assert j["result_version"] == j["base_version"] + 1

    # No two jobs of the model overlapped in time.
    spans = sorted((j["started_at"], j["finished_at"]) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans
    assert stack.api.get("/v1/audit/verify").json()["ok"] is True


def test_worker_killed_mid_job_completes_exactly_once(
    make_stack, postgres_url: str, redis_url: str, digits: Digits
) -> None:
    stack: Stack = make_stack(
        database_url=postgres_url, broker_url=redis_url, job_lease_seconds=3.0, job_heartbeat_seconds=0.5
    )
    stack.register_digits(digits)
    first = stack.start_worker("doomed")
    r = stack.submit("digits", samples=digits.samples(slice(0, 40)), method="imu", params=SLOW_PARAMS,
                     policy=LENIENT)  # fmt: skip
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    # Kill it once the engine is really working (past loading), i.e. mid-job.
    stack.wait_job(job_id, timeout=90, until=lambda j: j["status"] == "running" and j["progress"] > 0.1)
    first.kill(signal.SIGKILL)
    assert stack.api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

    stack.start_worker("rescuer")
    # The dead worker's lease runs out; the reconciler requeues the job and re-sends it.
    deadline = time.monotonic() + 30
    requeued = 0
    while time.monotonic() < deadline and not requeued:
        time.sleep(1.0)
        requeued = reconcile_once(stack.api.ctx)["requeued"]
    assert requeued == 1
    job = stack.wait_job(job_id, timeout=150)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["base_version"] == 1 and job["result_version"] == 2
    versions = stack.api.get("/v1/models/digits/versions").json()["items"]
    assert sorted(v["version"] for v in versions) == [1, 2], "exactly one new version"
    actions = [e["action"] for e in stack.api.get("/v1/audit", params={"limit": 200}).json()["items"]]
    assert actions.count("job.started") == 2
    assert actions.count("job.requeued") == 1
    assert actions.count("job.succeeded") == 1
    assert stack.api.get("/v1/audit/verify").json()["ok"] is True
    assert stack.api.get("/v1/models/digits").json()["latest_version"] == 2


def test_broker_lost_its_queue(make_stack, postgres_url: str, redis_url: str, digits: Digits) -> None:
    stack: Stack = make_stack(
        database_url=postgres_url, broker_url=redis_url, reconcile_stale_outbox_seconds=1.0
    )
    stack.register_digits(digits)
    r = stack.submit("digits", samples=digits.samples(slice(0, 10)))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() > 0, "the job was published to Redis"
    client.flushdb()  # Redis here keeps nothing on disk: a restart loses the queue like this
    client.close()

    stack.start_worker("after-flush")
    time.sleep(4.0)
    assert stack.api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued", "the message is really gone"
    stats = reconcile_once(stack.api.ctx)
    assert stats["republished"] == 1, stats
    job = stack.wait_job(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["result_version"] == 2
