"""Job endpoints: thin HTTP adapters over ``service.jobs.logic``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from service.deps import Context, DbSession, Principal, require
from service.jobs import logic, training
from service.jobs.schemas import JobOut, JobPage, TrainingJobIn
from service.listing import ModelListParams

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
training_router = APIRouter(tags=["jobs"])

Reader = Annotated[Principal, Depends(require("jobs:read"))]
Canceller = Annotated[Principal, Depends(require("deletions:write"))]
Trainer = Annotated[Principal, Depends(require("models:write"))]


@router.get("", response_model=JobPage, summary="List jobs")
def list_jobs(db: DbSession, principal: Reader, query: ModelListParams) -> Any:
    items, next_cursor = logic.list_jobs(db, principal.tenant_id, query)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobOut, summary="Get a job")
def get_job(job_id: str, db: DbSession, principal: Reader) -> Any:
    return logic.get_job(db, principal.tenant_id, job_id)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job")
def cancel_job(job_id: str, db: DbSession, principal: Canceller) -> Any:
    out = logic.cancel_job(db, principal, job_id)
    return JSONResponse(out.model_dump(mode="json"), status_code=202)


@router.get(
    "/{job_id}/events",
    summary="Progress of a job as Server-Sent Events (ends when the job ends)",
    response_class=StreamingResponse,
)
def job_events(job_id: str, ctx: Context, db: DbSession, principal: Reader) -> StreamingResponse:
    logic.get_job(db, principal.tenant_id, job_id)  # 404 before the stream starts
    return StreamingResponse(
        logic.event_stream(ctx, principal.tenant_id, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@training_router.post(
    "/v1/models/{name}/training-jobs",
    status_code=202,
    response_model=JobOut,
    summary="Train a version from a registered dataset version and a recipe (a job on the queue)",
)
def create_training_job(
    name: str, body: TrainingJobIn, ctx: Context, db: DbSession, principal: Trainer
) -> JSONResponse:
    job = training.submit(ctx, db, principal, name, body.dataset, body.dataset_version, body.recipe)
    out = logic.get_job(db, principal.tenant_id, job.id)
    return JSONResponse(
        out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
    )
