"""Routes of the data sets API (docs/datasets.md): thin adapters over ``service.datasets.logic``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.datasets import logic
from service.datasets.ingest import too_large
from service.datasets.records import get_dataset, get_version
from service.datasets.schemas import DatasetCreate, DatasetOut, DatasetVersionOut
from service.deps import Context, DbSession, Principal, require
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from service.tables import Dataset, DatasetVersion

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
# The same scopes as models: whoever manages a tenant's models manages their training data.
Reader = Annotated[Principal, Depends(require("models:read"))]
Writer = Annotated[Principal, Depends(require("models:write"))]


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Register a training data set",
    responses={409: {"description": "a data set of that name exists"}},
)
def create_dataset(body: DatasetCreate, session: DbSession, principal: Writer, response: Response) -> Any:
    dataset = logic.create_dataset(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        name=body.name,
        task=body.task,
        description=body.description,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.name}"
    return logic.dataset_out(dataset)


@router.get("", response_model=Page[DatasetOut], summary="List data sets")
def list_datasets(
    session: DbSession, principal: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    stmt = select(Dataset).where(Dataset.tenant_id == principal.tenant_id)
    return page_of(session, stmt, logic.dataset_out, order_by=[Dataset.name], limit=limit, cursor=cursor)


@router.get("/{name}", response_model=DatasetOut, summary="Get a data set")
def get_dataset_route(name: str, session: DbSession, principal: Reader) -> Any:
    return logic.dataset_out(get_dataset(session, principal.tenant_id, name))


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=DatasetVersionOut,
    summary="Upload a version (safetensors or .npz with sample_ids, optional subject_ids)",
    responses={
        413: {"description": "the upload exceeds the data set size limit"},
        422: {"description": "the data do not validate (nothing is stored)"},
    },
)
async def upload_version(
    name: str,
    session: DbSession,
    principal: Writer,
    ctx: Context,
    response: Response,
    data: Annotated[UploadFile, File(description="safetensors or .npz: data, sample_ids, subject_ids?")],
    description: Annotated[str | None, Form(max_length=10_000)] = None,
) -> Any:
    limit = ctx.settings.dataset_max_bytes
    if data.size is not None and data.size > limit:
        raise too_large(data.size, limit)
    blob = await data.read()
    # Parsing, checking and storing tensors is CPU and I/O work: keep it off the event loop.
    version = await run_in_threadpool(
        logic.upload_version,
        session,
        ctx,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        dataset_name=name,
        data=blob,
        description=description,
    )
    response.headers["Location"] = f"/v1/datasets/{name}/versions/{version.version}"
    return logic.version_out(version)


@router.get("/{name}/versions", response_model=Page[DatasetVersionOut], summary="List versions")
def list_versions(
    name: str, session: DbSession, principal: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    dataset = get_dataset(session, principal.tenant_id, name)
    stmt = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    order = [DatasetVersion.version]
    return page_of(session, stmt, logic.version_out, order_by=order, limit=limit, cursor=cursor)


@router.get(
    "/{name}/versions/{v}", response_model=DatasetVersionOut, summary="Get a version (int or 'latest')"
)
def get_version_route(name: str, v: str, session: DbSession, principal: Reader) -> Any:
    dataset = get_dataset(session, principal.tenant_id, name)
    return logic.version_out(get_version(session, dataset, v))
