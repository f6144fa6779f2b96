"""Following a job to its end: the Server-Sent Events stream ``GET /v1/jobs/{id}/events``, with
polling when streaming is not possible (an older server, a proxy that buffers or refuses it).

``events`` emits a snapshot of the job each time its status, stage or progress changes;
``wait_job`` runs it with a progress display and returns the finished job; ``wait_request``
follows a deletion request through the job(s) that serve it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import httpx

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, open_stream
from unlearn_client.errors import (
    Forbidden,
    NotFound,
    ProblemError,
    TransportFailure,
    Unauthorized,
    WaitTimeout,
)
from unlearn_client.flow import Close, Emit, EmittingFlow, Flow, Read, Sleep, Stream, forward
from unlearn_client.models import DeletionRequest, Job
from unlearn_client.ops import deletions, jobs
from unlearn_client.progress import JobProgress, job_reporter
from unlearn_client.sse import SseParser

# What ``wait`` accepts: a job or a deletion request, or the id of one ("del_..." ids are requests).
WaitTarget = str | Job | DeletionRequest


@dataclass
class _Follower:
    """The state of one follow: which snapshot was last handed out, and the deadline."""

    job_id: str
    timeout: float | None
    started: float
    last: Job | None = None

    def changed(self, job: Job) -> bool:
        def key(j: Job) -> tuple[object, ...]:
            # What the server's stream also compares: a new metric alone is not progress.
            return (j.status, j.stage, round(j.progress, 3), j.attempts)

        fresh = self.last is None or key(job) != key(self.last)
        self.last = job
        return fresh

    def remaining(self) -> float | None:
        if self.timeout is None:
            return None
        left = self.timeout - (time.monotonic() - self.started)
        if left <= 0:
            raise WaitTimeout(self.job_id, self.timeout, self.last)
        return left


_ENDED, _INTERRUPTED = "ended", "interrupted"


# The server sends a keep-alive at least every 15 s: a longer silence is a dead connection.
_MAX_SILENCE = 60.0


def _stream_once(options: Options, state: _Follower) -> EmittingFlow[Job, str]:
    """Read one SSE connection; returns whether the job ended or the stream stopped before."""
    spec = api.JOB_EVENTS.request({"job_id": state.job_id}, headers={"Accept": "text/event-stream"}).spec
    # Waiting for the next event never outlasts the caller's deadline: the read times out then.
    left = state.remaining()
    spec = dataclasses.replace(spec, timeout=_MAX_SILENCE if left is None else min(left, _MAX_SILENCE))
    stream = yield from open_stream(options, spec)
    try:
        outcome = yield from _read_events(stream, state)
    except httpx.TransportError:
        outcome = _INTERRUPTED  # the connection broke: the caller reconnects
    yield Close(stream)
    return outcome


def _read_events(stream: Stream, state: _Follower) -> EmittingFlow[Job, str]:
    parser = SseParser()
    while True:
        chunk: bytes = yield Read(stream)
        if not chunk:
            return _INTERRUPTED  # the server's own time limit ("timeout" event), or a proxy's
        for event in parser.feed(chunk):
            if event.event == "progress":
                job = Job.model_validate_json(event.data)
                if state.changed(job):
                    yield Emit(job)
            elif event.event == "end":
                return _ENDED
        state.remaining()


def events(options: Options, job_id: str, *, timeout: float | None = None) -> EmittingFlow[Job, Job]:
    """Emit the job each time its status, stage or progress changes, until it ends; return it.

    ``timeout`` (seconds) raises WaitTimeout.
    """
    state = _Follower(job_id, timeout, time.monotonic())
    use_sse = options.use_sse
    fruitless = 0  # stream connections in a row that ended before the job without any news
    while True:
        state.remaining()
        if use_sse:
            before = state.last
            try:
                outcome = yield from _stream_once(options, state)
            except (NotFound, Unauthorized, Forbidden):
                raise
            except (ProblemError, TransportFailure):
                use_sse = False  # this server (or a proxy on the way) cannot stream: poll
                continue
            if outcome == _INTERRUPTED:
                fruitless = 0 if state.last is not before else fruitless + 1
                if fruitless >= options.retry.attempts:
                    use_sse = False
                continue
        job = yield from jobs.get(options, job_id)
        if state.changed(job):
            yield Emit(job)
        if job.is_terminal:
            return job
        remaining = state.remaining()
        pause = options.poll_interval if remaining is None else min(options.poll_interval, remaining)
        yield Sleep(pause)


def wait_job(
    options: Options, job: Job | str, *, progress: JobProgress = False, timeout: float | None = None
) -> Flow[Job]:
    """Follow a job until it ends and return it (a job that failed too: see ``status``, ``error``).

    ``progress=True`` shows a progress bar on stderr (rich, from the ``cli`` extra; plain lines
    without it); a callable is called with every new snapshot instead. ``timeout`` (seconds)
    raises WaitTimeout.
    """
    job_id = job.id if isinstance(job, Job) else job
    reporter = job_reporter(progress)
    try:
        return (yield from forward(events(options, job_id, timeout=timeout), reporter.update))
    finally:
        reporter.close()


def wait_request(
    options: Options,
    request: DeletionRequest | str,
    *,
    progress: JobProgress = False,
    timeout: float | None = None,
) -> Flow[DeletionRequest]:
    """Follow a deletion request until it is completed, failed or cancelled, and return it.

    The job that serves it is followed (``progress`` shows that job); a request that needs no
    job (its samples were already erased) is returned as it is.
    """
    started = time.monotonic()
    current = (
        request if isinstance(request, DeletionRequest) else (yield from deletions.get(options, request))
    )
    while not current.is_terminal:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise WaitTimeout(current.job_id or current.id, timeout or 0.0)
        if current.job_id is not None:
            # The request ends in the transaction that ends its job; a failed attempt may also
            # move it to another job, so read it again and go on until it is terminal.
            yield from wait_job(options, current.job_id, progress=progress, timeout=left)
        else:
            yield Sleep(options.poll_interval if left is None else min(options.poll_interval, left))
        current = yield from deletions.get(options, current.id)
    return current


def wait(
    options: Options, target: WaitTarget, *, progress: JobProgress = False, timeout: float | None = None
) -> Flow[Job | DeletionRequest]:
    """Follow a job or a deletion request to its end and return it, of the kind given: a Job
    for a job (or a job id), a DeletionRequest for a request (or a ``del_...`` id).

    ``client.jobs.wait`` and ``client.deletions.wait`` are the same, typed for one kind each.
    """
    if isinstance(target, DeletionRequest) or (isinstance(target, str) and target.startswith("del_")):
        return (yield from wait_request(options, target, progress=progress, timeout=timeout))
    return (yield from wait_job(options, target, progress=progress, timeout=timeout))
