"""Routes of API.md "Models and versions"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service import jsonbody
from service.audit.logic import append_event
from service.db import session_scope
from service.deps import Context, DbSession, Principal, require
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from service.registry import lineage, logic, retirement
from service.registry.download import artifact_response
from service.registry.schemas import ModelCreate, ModelOut, ModelPatch, RollbackIn, VersionOut
from service.tables import Model, ModelVersion

router = APIRouter(prefix="/v1/models", tags=["models"])
_DATASET = "the registered training set this version was trained on"
_DATASET_VERSION = "its version (default: latest)"
_RECIPE = "JSON: how it was trained (the retrain method's params plus seed)"
Reader = Annotated[Principal, Depends(require("models:read"))]
Writer = Annotated[Principal, Depends(require("models:write"))]


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    summary="Register a model",
    responses={409: {"description": "a model of that name exists"}},
)
def create_model(
    body: ModelCreate, session: DbSession, principal: Writer, ctx: Context, response: Response
) -> Any:
    model = logic.create_model(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        name=body.name,
        task=body.task,
        architecture=body.architecture.model_dump(),
        description=body.description,
        tags=body.tags,
        hf_config_dirs=ctx.settings.hf_config_dirs,
    )
    response.headers["Location"] = f"/v1/models/{model.name}"
    return logic.model_out(model)


@router.get("", response_model=Page[ModelOut], summary="List models")
def list_models(
    session: DbSession, principal: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    stmt = select(Model).where(Model.tenant_id == principal.tenant_id)
    return page_of(session, stmt, logic.model_out, order_by=[Model.name], limit=limit, cursor=cursor)


@router.get("/{name}", response_model=ModelOut, summary="Get a model")
def get_model(name: str, session: DbSession, principal: Reader) -> Any:
    return logic.model_out(logic.get_model(session, principal.tenant_id, name))


@router.patch("/{name}", response_model=ModelOut, summary="Change a model's settings (eventual exactness)")
def patch_model(name: str, body: ModelPatch, session: DbSession, principal: Writer) -> Any:
    model = logic.get_model(session, principal.tenant_id, name, for_update=True)
    changed = body.model_dump(exclude_unset=True)
    if "exactness" in changed:
        policy = changed["exactness"] or {}
        model.exactness = {k: v for k, v in policy.items() if v is not None} or None
    if "description" in changed:
        model.description = body.description
    session.flush()
    append_event(
        session,
        actor=principal.actor,
        action="model.updated",
        tenant_id=principal.tenant_id,
        model=model.name,
        object_id=model.id,
        payload={"changed": sorted(changed), "exactness": model.exactness},
    )
    return logic.model_out(model)


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=VersionOut,
    summary="Upload a version (safetensors checkpoint, optional eval set)",
    responses={
        409: {"description": "the named training set's version was replaced, or a concurrent upload won"},
        422: {"description": "the checkpoint or eval set does not fit the model"},
    },
)
async def upload_version(
    name: str,
    request: Request,
    session: DbSession,
    principal: Writer,
    ctx: Context,
    response: Response,
    checkpoint: Annotated[UploadFile, File(description="safetensors state dict")],
    eval_set: Annotated[UploadFile | None, File(description="holdout set: safetensors or .npz")] = None,
    description: Annotated[str | None, Form(max_length=10_000)] = None,
    dataset: Annotated[
        str | None,
        Form(max_length=200, description="the registered training set this version was trained on"),
    ] = None,
    dataset_version: Annotated[
        str | None, Form(max_length=20, description="its version (default: latest)")
    ] = None,
    recipe: Annotated[
        str | None, Form(max_length=10_000, description="JSON: how it was trained (retrain's params + seed)")
    ] = None,
) -> Any:
    model_row = await run_in_threadpool(_model_task, ctx, principal.tenant_id, name)
    training = await run_in_threadpool(
        lineage.resolve_link,
        ctx,
        principal.tenant_id,
        model_row,
        dataset,
        dataset_version,
        jsonbody.loads(recipe, what="recipe") if recipe else None,
    )
    checkpoint_bytes = await checkpoint.read()
    eval_bytes = await eval_set.read() if eval_set is not None else None
    # Parsing and checking tensors is CPU work: keep it off the event loop.
    version = await run_in_threadpool(
        logic.upload_version,
        session,
        ctx,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        model_name=name,
        checkpoint=checkpoint_bytes,
        eval_set=eval_bytes,
        description=description,
        training=training,
    )
    response.headers["Location"] = f"/v1/models/{name}/versions/{version.version}"
    return logic.version_out(version, lineage.training_data(session, version))


def _model_task(ctx: Context, tenant_id: str, name: str) -> str:
    with session_scope(ctx.session_factory) as read:
        return logic.get_model(read, tenant_id, name).task


@router.get("/{name}/versions", response_model=Page[VersionOut], summary="List versions")
def list_versions(
    name: str, session: DbSession, principal: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    model = logic.get_model(session, principal.tenant_id, name)
    stmt = select(ModelVersion).where(ModelVersion.model_id == model.id)

    def out(v: ModelVersion) -> dict[str, Any]:
        return logic.version_out(v, lineage.training_data(session, v))

    order = [ModelVersion.version]
    return page_of(session, stmt, out, order_by=order, limit=limit, cursor=cursor)


@router.get("/{name}/versions/{v}", response_model=VersionOut, summary="Get a version (int or 'latest')")
def get_version(name: str, v: str, session: DbSession, principal: Reader) -> Any:
    model = logic.get_model(session, principal.tenant_id, name)
    version = logic.get_version(session, model, v)
    return logic.version_out(version, lineage.training_data(session, version))


@router.delete(
    "/{name}/versions/{v}",
    response_model=VersionOut,
    summary="Retire a version: its checkpoint answers 410 Gone, its blob goes after a grace period",
    responses={409: {"description": "the version is the model's latest: roll back first"}},
)
def retire_version(name: str, v: str, session: DbSession, principal: Writer) -> Any:
    version = retirement.retire_by_owner(session, principal.tenant_id, name, v, principal.actor)
    return logic.version_out(version, lineage.training_data(session, version))


@router.post(
    "/{name}/rollback",
    status_code=201,
    response_model=VersionOut,
    summary="Make an earlier version's checkpoint the latest again (never one that held erased data)",
    responses={
        409: {"description": "a job runs, the version is the latest, or it held data erased since"},
        410: {"description": "the version's checkpoint was deleted after its grace period"},
    },
)
def rollback(name: str, body: RollbackIn, session: DbSession, principal: Writer, response: Response) -> Any:
    version = retirement.rollback(session, principal.tenant_id, name, body.to_version, principal.actor)
    response.headers["Location"] = f"/v1/models/{name}/versions/{version.version}"
    return logic.version_out(version, lineage.training_data(session, version))


_CHECKPOINT_HEADERS = {h: {"schema": {"type": "string"}} for h in ("ETag", "Repr-Digest", "Accept-Ranges")}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "headers": _CHECKPOINT_HEADERS},
    206: {"description": "a byte range", "content": {"application/octet-stream": {}}},
    304: {"description": "If-None-Match matched"},
    410: {"description": "the version was retired: its checkpoint is no longer served"},
    416: {"description": "range not satisfiable"},
}


@router.get(
    "/{name}/versions/{v}/checkpoint",
    summary="Download a version's safetensors checkpoint (ETag, Repr-Digest, Range)",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="download_checkpoint",
)
@router.head(
    "/{name}/versions/{v}/checkpoint",
    summary="Headers of a checkpoint download (size, ETag, Repr-Digest)",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="head_checkpoint",
)
def download_checkpoint(
    name: str,
    v: str,
    request: Request,
    session: DbSession,
    principal: Reader,
    ctx: Context,
    if_none_match: Annotated[str | None, Header()] = None,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    model = logic.get_model(session, principal.tenant_id, name)
    version = logic.get_version(session, model, v)
    if version.status == retirement.VersionStatus.RETIRED:
        raise retirement.gone(model.name, version)
    resp, sent = artifact_response(
        store=ctx.storage,
        key=version.storage_key,
        sha256=version.sha256,
        size=version.size_bytes,
        filename=f"{model.name}-v{version.version}.safetensors",
        method=request.method,
        if_none_match=if_none_match,
        range_header=range_header,
        if_range=if_range,
        # "latest" moves with every new version; only a numbered version's bytes never change.
        immutable=v != "latest",
    )
    if v == "latest":
        resp.headers["Content-Location"] = f"/v1/models/{model.name}/versions/{version.version}/checkpoint"
    # One event per download, not per chunk: a resumed or parallel download's later ranges
    # (start > 0) and cache revalidations (304) are not recorded.
    if sent is not None and sent[0] == 0:
        append_event(
            session,
            actor=principal.actor,
            action="checkpoint.downloaded",
            tenant_id=principal.tenant_id,
            model=model.name,
            object_id=version.id,
            payload={"version": version.version, "sha256": version.sha256, "range": list(sent)},
        )
    return resp
