"""``POST /v1/models/{name}/references``: queue a reference set (a job; see ``service.references``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.deps import Context, DbSession, Principal, require
from service.jobs import logic as jobs
from service.jobs.schemas import JobOut
from service.references import logic
from service.references.schemas import ReferencesIn

router = APIRouter(tags=["jobs"])

Trainer = Annotated[Principal, Depends(require("models:write"))]


@router.post(
    "/v1/models/{name}/references",
    status_code=202,
    response_model=JobOut,
    summary="Train K reference models from the version's registered data (a job on the queue)",
    responses={
        409: {
            "description": "reference models are off on this service, or an erasure replaced the "
            "dataset version the model's latest version was trained on"
        },
        422: {"description": "the version names no training data and recipe, or k is past the limit"},
    },
)
def create_references(
    name: str, body: ReferencesIn, ctx: Context, db: DbSession, principal: Trainer
) -> JSONResponse:
    job = logic.submit(ctx, db, principal, name, body)
    out = jobs.get_job(db, principal.tenant_id, job.id)
    return JSONResponse(
        out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
    )
