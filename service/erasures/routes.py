"""Erasure endpoints: thin HTTP adapters over ``service.erasures.logic``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service import jsonbody
from service.deletions.routes import IdempotentPost, Reader, respond
from service.deps import Context, DbSession
from service.erasures import logic
from service.erasures.schemas import ErasureIn, ErasureOut, ErasurePage
from service.errors import unprocessable
from service.openapi import request_body
from service.pagination import DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(tags=["erasures"])


@router.post(
    "/v1/datasets/{name}/erasures",
    status_code=202,
    response_model=ErasureOut,
    summary="Erase a data subject (or sample ids) from a training set and every model trained on it",
    responses={
        200: {"model": ErasureOut, "description": "nothing left to erase: completed at once"},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        409: {"description": "the data set's version was replaced meanwhile, or a model has no version"},
        410: {"description": "the data set's version was purged"},
        429: {},
    },
    openapi_extra=request_body(ErasureIn),
)
async def create_erasure(name: str, ctx: Context, db: DbSession, post: IdempotentPost) -> JSONResponse:
    parsed = jsonbody.parse_model(post.body, ErasureIn)
    if (parsed.subject is None) == (parsed.sample_ids is None):
        raise unprocessable("give exactly one of subject or sample_ids")
    return respond(
        await run_in_threadpool(
            logic.submit, ctx, db, post.principal, name, parsed.subject, parsed.sample_ids, post.idem
        )
    )


@router.get("/v1/erasures/{erasure_id}", response_model=ErasureOut, summary="Get an erasure")
def get_erasure(erasure_id: str, ctx: Context, db: DbSession, principal: Reader) -> Any:
    return logic.get(db, ctx, principal.tenant_id, erasure_id)


@router.get("/v1/erasures", response_model=ErasurePage, summary="List erasures")
def list_erasures(
    ctx: Context,
    db: DbSession,
    principal: Reader,
    dataset: Annotated[str | None, Query(max_length=200)] = None,
    subject: Annotated[str | None, Query(max_length=400)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    return logic.list_erasures(db, ctx, principal.tenant_id, dataset, subject, limit, cursor)
