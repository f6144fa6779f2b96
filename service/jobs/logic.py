"""Jobs: reads, cancellation and the progress event stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.audit.logic import append_event
from service.context import ServiceContext
from service.db import session_scope
from service.deps import Principal
from service.errors import conflict
from service.jobs.errors import JobError
from service.jobs.lifecycle import end_job, rowcount
from service.jobs.schemas import JobOut
from service.jobs.states import TERMINAL_JOB, JobStatus
from service.listing import ModelListQuery, get_owned, page_model_rows
from service.tables import DeletionRequest, Job


def to_out(job: Job, model_name: str, request_ids: list[str]) -> JobOut:
    return JobOut(
        id=job.id,
        model=model_name,
        kind=job.kind,
        reason=job.reason,
        method_reason=job.method_reason,
        method=job.method,
        params=dict(job.params or {}),
        policy=dict(job.policy or {}),
        seed=job.seed,
        status=job.status,
        stage=job.stage,
        progress=float(job.progress or 0.0),
        base_version=job.base_version,
        result_version=job.result_version,
        deletion_requests=request_ids,
        n_requests=job.n_requests,
        n_samples=job.n_samples,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        cancel_requested=bool(job.cancel_requested),
        error=job.error,
        metrics=job.metrics,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _request_ids(db: Session, job_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    rows = db.execute(
        select(DeletionRequest.job_id, DeletionRequest.id)
        .where(DeletionRequest.job_id.in_(job_ids))
        .order_by(DeletionRequest.created_at, DeletionRequest.id)
    ).all()
    for job_id, req_id in rows:
        if job_id is not None:
            out[job_id].append(req_id)
    return out


def _load(db: Session, tenant_id: str, job_id: str) -> tuple[Job, str]:
    return get_owned(db, Job, tenant_id, job_id, "job")


def get_job(db: Session, tenant_id: str, job_id: str) -> JobOut:
    job, name = _load(db, tenant_id, job_id)
    return to_out(job, name, _request_ids(db, [job.id])[job.id])


def list_jobs(db: Session, tenant_id: str, query: ModelListQuery) -> tuple[list[JobOut], str | None]:
    rows, names, next_cursor = page_model_rows(db, Job, tenant_id, query, statuses=tuple(JobStatus))
    reqs = _request_ids(db, [r.id for r in rows])
    return [to_out(r, names[r.model_id], reqs[r.id]) for r in rows], next_cursor


def cancel_job(db: Session, principal: Principal, job_id: str) -> JobOut:
    """Cancel a queued job at once, or ask a running one to stop at its next step.

    A finished job → 409. A job cancelled here announces the model's next job and purges its
    forget sets once the request's transaction commits.
    """
    job, name = _load(db, principal.tenant_id, job_id)
    if job.status in TERMINAL_JOB:
        raise conflict(f"job {job_id} already finished ({job.status})", job_status=job.status)
    ended = job.status == JobStatus.QUEUED and end_job(
        db,
        job_id,
        status=JobStatus.CANCELLED,
        error=JobError("Cancelled", f"cancelled by {principal.actor} before it started"),
        actor=principal.actor,
        from_status=JobStatus.QUEUED,
    )
    if not ended:
        # Running (or claimed by a worker a moment ago): the worker stops at its next step.
        res = db.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) != 1:
            job, _ = _load(db, principal.tenant_id, job_id)
            raise conflict(f"job {job_id} already finished ({job.status})", job_status=job.status)
        append_event(
            db,
            actor=principal.actor,
            action="job.cancel_requested",
            tenant_id=principal.tenant_id,
            model=name,
            object_id=job_id,
            payload={},
        )
    job, name = _load(db, principal.tenant_id, job_id)
    return to_out(job, name, _request_ids(db, [job_id])[job_id])


def _snapshot(ctx: ServiceContext, tenant_id: str, job_id: str) -> dict[str, Any]:
    with session_scope(ctx.session_factory) as s:
        return get_job(s, tenant_id, job_id).model_dump(mode="json")


async def event_stream(
    ctx: ServiceContext, tenant_id: str, job_id: str, *, poll_seconds: float = 0.5, max_seconds: float = 900.0
) -> AsyncIterator[str]:
    """Server-Sent Events: one ``progress`` event per change of status/stage/progress, then ``end``.

    Polls the job row (the database is the source of truth); bounded by ``max_seconds``.
    """
    deadline = time.monotonic() + max_seconds
    last: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    while True:
        snap = await run_in_threadpool(_snapshot, ctx, tenant_id, job_id)
        key = (snap["status"], snap["stage"], round(snap["progress"], 3), snap["attempts"])
        if key != last:
            last = key
            last_sent = time.monotonic()
            yield f"event: progress\ndata: {json.dumps(snap)}\n\n"
        elif time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if snap["status"] in TERMINAL_JOB:
            yield f"event: end\ndata: {json.dumps({'status': snap['status']})}\n\n"
            return
        if time.monotonic() > deadline:
            yield f"event: timeout\ndata: {json.dumps({'status': snap['status']})}\n\n"
            return
        await asyncio.sleep(poll_seconds)
