"""The whole flow through the SDK with the real worker: register a model, upload a version,
submit a deletion, wait for it (Server-Sent Events), download the new version and check its
digest, verify the audit chain. Once with each client."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from unlearn_client import Client, DeletionRequest, Job, WaitTimeout

from tests.sdk.conftest import DIGITS_ARCH, FAST_RETRY, Clients, Digits, Server, unique
from tests.sdk.faults import Answer, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _class_3(digits: Digits) -> Any:
    return torch.nonzero(digits.y_train == 3).flatten()[:20]


ORDER = {"queued": 0, "running": 1, "succeeded": 2}


def test_full_flow(clients: Clients, proxy: FaultProxy, digits: Digits, tmp_path: Path) -> None:
    name = unique("flow")
    seen: list[Job] = []

    def steps(c: Any) -> Any:
        # One SDK call per yield: the fixture runs it with either client and sends the answer back.
        yield c.models.create(name, DIGITS_ARCH)
        v1 = yield c.versions.upload(name, digits.checkpoint, digits.eval_set)
        assert v1.version == 1
        request = yield c.deletions.submit(name, digits.forget_file(_class_3(digits)), subject="user-42")
        assert request.status == "queued"
        job = yield c.jobs.wait(request.job_id, progress=seen.append, timeout=240)
        # Waiting on the request itself gives the request (its job has ended: no more waiting).
        done = yield c.wait(request.id)
        assert isinstance(done, DeletionRequest) and done.id == request.id
        assert done.status == "completed" and done.result_version == 2
        v2 = yield c.versions.get(name, "latest")
        assert v2.parent_version == 1 and v2.created_by_job == job.id
        download = yield c.download(name, "latest", tmp_path)
        verified = yield c.audit.verify()
        return job, v2, download, verified

    job, v2, download, verified = clients(steps, url=proxy.url)

    assert job.status == "succeeded", job.error
    assert (job.base_version, job.result_version) == (1, 2)
    # (How much the model forgot is the engine's business, tested there; here: it reported it.)
    assert job.metrics is not None and {"before", "after"} <= set(job.metrics)
    # Progress came as it happened, in order, ending with the outcome.
    assert seen and seen[-1].status == "succeeded"
    ranks = [ORDER[s.status] for s in seen]
    assert ranks == sorted(ranks)
    assert download.version == 2 and download.sha256 == v2.sha256
    assert hashlib.sha256(download.path.read_bytes()).hexdigest() == download.sha256
    assert verified.ok
    # Followed by the event stream, not by polling: one stream, and one GET of the job at its end.
    assert proxy.requests("GET", rf"^/v1/jobs/{job.id}/events$")
    assert len(proxy.requests("GET", rf"^/v1/jobs/{job.id}$")) == 1


def test_wait_polls_when_the_event_stream_is_refused(
    server: Server, proxy: FaultProxy, registered: str, digits: Digits
) -> None:
    # A proxy that cannot stream: every try at the events endpoint gets a 502.
    proxy.add("GET", r"/events$", Answer(502), times=100)
    with Client(proxy.url, server.admin_key, poll_interval=0.2, retry=FAST_RETRY) as client:
        request = client.deletions.submit(registered, samples=digits.samples(_class_3(digits)[:10].tolist()))
        snapshots = list(client.jobs.events(request.job_id or ""))
        job = client.jobs.wait(request.job_id or "")
        done = client.deletions.wait(request)
    assert snapshots[-1].is_terminal and job.status == snapshots[-1].status
    assert job.id == request.job_id and done.is_terminal and done.job_id == job.id
    assert len(proxy.requests("GET", rf"^/v1/jobs/{job.id}$")) >= 2  # polled


def test_waiting_for_a_request_again_returns_at_once(server: Server, registered: str, digits: Digits) -> None:
    samples = digits.samples(_class_3(digits)[:5].tolist())
    with server.client() as client:
        first = client.deletions.wait(client.deletions.submit(registered, samples=samples), timeout=240)
        assert first.status == "completed"
        assert client.wait(first) == client.deletions.get(first.id)  # terminal: nothing to follow
        # The same samples again: the service may answer "already erased" with no job at all;
        # either way waiting ends with a terminal request.
        again = client.deletions.submit(registered, samples=samples)
        done = client.wait(again.id, timeout=240)
    assert isinstance(done, DeletionRequest) and done.id == again.id and done.is_terminal


def test_wait_times_out(server: Server, registered: str, digits: Digits) -> None:
    with server.client() as client:
        with server.worker_paused():  # the job stays queued
            request = client.deletions.submit(registered, samples=digits.samples([0]))
            started = time.monotonic()
            with pytest.raises(WaitTimeout) as timed_out:
                client.wait(request, timeout=0.5)
            # On time, though the event stream is silent for 15 s between keep-alives.
            assert time.monotonic() - started < 3
            assert timed_out.value.job_id == request.job_id
            with pytest.raises(WaitTimeout):
                client.jobs.wait(request.job_id or "", timeout=0.5)
        assert client.jobs.wait(request.job_id or "", timeout=240).is_terminal
