"""Deletion-request endpoints: thin HTTP adapters over ``service.deletions.logic``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import idempotency, jsonbody
from service.context import ServiceContext
from service.deletions import logic, retry
from service.deletions.reference import Reference
from service.deletions.schemas import (
    BulkDeletionIn,
    BulkDeletionOut,
    DeletionRequestIn,
    DeletionRequestOut,
    DeletionRequestPage,
    RetryIn,
    SampleDigestsOut,
)
from service.deps import Context, DbSession, Principal, authenticate_request, require
from service.errors import Problem, unprocessable
from service.listing import ModelListParams
from service.openapi import DELETION_REQUEST_FORM, request_body

router = APIRouter(tags=["deletion requests"])

Writer = Annotated[Principal, Depends(require("deletions:write"))]


def _reader(principal: Annotated[Principal, Depends(authenticate_request)]) -> Principal:
    # Reading a request is allowed to whoever may submit one, and to job readers (operators).
    if not (principal.has("jobs:read") or principal.has("deletions:write")):
        raise Problem(403, "Forbidden", "this API key needs the 'jobs:read' or 'deletions:write' scope")
    return principal


Reader = Annotated[Principal, Depends(_reader)]


@dataclass(frozen=True)
class JsonPost:
    """A JSON POST by a deletion writer: its body, the caller, and its Idempotency-Key context
    (scoped to the path, hashed over the body)."""

    body: bytes
    principal: Principal
    idem: idempotency.IdempotencyContext | None


async def _json_post(
    request: Request,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JsonPost:
    body = await request.body()
    idem = idempotency.make_context(principal.tenant_id, idempotency_key, "POST", request.url.path, body)
    return JsonPost(body, principal, idem)


IdempotentPost = Annotated[JsonPost, Depends(_json_post)]


def respond(answer: logic.Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)


_FORM_FIELDS = {"forget_set", "subject", "method", "params", "base_version", "policy"}


def _json_field(name: str, raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    return jsonbody.loads(raw, what=name)


async def _parse_multipart(request: Request) -> tuple[logic.Intake, bytes]:
    form = await request.form(max_files=1, max_fields=len(_FORM_FIELDS))
    unknown = sorted(set(form.keys()) - _FORM_FIELDS)
    if unknown:
        raise unprocessable(f"unknown form field(s): {', '.join(unknown)}; allowed: {sorted(_FORM_FIELDS)}")
    upload = form.get("forget_set")
    if not isinstance(upload, UploadFile):
        raise unprocessable("forget_set: a file is required (multipart field 'forget_set')")
    data = await upload.read()

    def text(name: str) -> str | None:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise unprocessable(f"{name}: must be a text field, not a file")
        return value

    params = _json_field("params", text("params"))
    if params is not None and not isinstance(params, dict):
        raise unprocessable("params: must be a JSON object")
    base = text("base_version")
    try:
        base_version = int(base) if base not in (None, "") else None
    except ValueError as exc:
        raise unprocessable("base_version: must be an integer") from exc
    subject = text("subject")
    if subject is not None and len(subject) > 400:
        raise unprocessable("subject: at most 400 characters")
    intake = logic.Intake(
        source=data,
        inline=False,
        subject=subject or None,
        method=text("method") or None,
        params=params,
        base_version=base_version,
        policy=logic.parse_policy(_json_field("policy", text("policy"))),
    )
    # Multipart boundaries differ between retries of one logical request, so the idempotency hash
    # covers a canonical form: the text fields and the sha256 of the file.
    canonical = json.dumps(
        {
            "forget_set_sha256": hashlib.sha256(data).hexdigest(),
            **{k: form.get(k) for k in sorted(_FORM_FIELDS - {"forget_set"})},
        },
        sort_keys=True,
    ).encode()
    return intake, canonical


def _parse_json(body: bytes) -> logic.Intake:
    parsed = jsonbody.parse_model(body, DeletionRequestIn)
    if parsed.samples is not None:
        if parsed.sample_ids is not None:
            raise unprocessable("give samples or sample_ids, not both")
        return logic.Intake(
            source=parsed.samples.as_mapping(),
            inline=True,
            subject=parsed.subject,
            method=parsed.method,
            params=parsed.params,
            base_version=parsed.base_version,
            policy=parsed.policy,
        )
    if parsed.subject is None and parsed.sample_ids is None:
        raise unprocessable(
            "give the samples, or name them in the model's registered training set by subject or sample_ids"
        )
    return logic.Intake(
        source=None,
        inline=False,
        subject=parsed.subject,
        reference=Reference(
            subject=parsed.subject,
            sample_ids=tuple(parsed.sample_ids) if parsed.sample_ids is not None else None,
        ),
        method=parsed.method,
        params=parsed.params,
        base_version=parsed.base_version,
        policy=parsed.policy,
    )


@router.post(
    "/v1/models/{name}/deletion-requests",
    status_code=202,
    response_model=DeletionRequestOut,
    summary="Ask for samples to be forgotten (multipart forget_set file, or JSON samples)",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        409: {"description": "the model has no version yet, or its training set's version was replaced"},
        410: {"description": "the registered training data the request refers to were purged"},
        415: {"description": "the body is neither multipart/form-data nor JSON"},
        429: {},
    },
    openapi_extra=request_body(DeletionRequestIn, form=DELETION_REQUEST_FORM),
)
async def create_deletion_request(
    name: str,
    request: Request,
    ctx: Context,
    db: DbSession,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        intake, hashed_body = await _parse_multipart(request)
    elif content_type.startswith("application/json") or content_type == "":
        hashed_body = await request.body()
        intake = _parse_json(hashed_body)
    else:
        raise Problem(415, "Unsupported Media Type", "send multipart/form-data (forget_set file) or JSON")
    idem = idempotency.make_context(
        principal.tenant_id, idempotency_key, "POST", request.url.path, hashed_body
    )
    # Validation, storage and the database work block; keep them off the event loop.
    return respond(await run_in_threadpool(logic.submit, ctx, db, principal, name, intake, idem))


@router.post(
    "/v1/models/{name}/deletion-requests/bulk",
    status_code=202,
    response_model=BulkDeletionOut,
    summary="Many deletion requests in one call and one transaction (all or none)",
    responses={409: {"description": "the model has no version yet"}, 429: {}},
    openapi_extra=request_body(BulkDeletionIn),
)
async def create_deletion_requests_bulk(
    name: str, ctx: Context, db: DbSession, post: IdempotentPost
) -> JSONResponse:
    parsed = jsonbody.parse_model(post.body, BulkDeletionIn)
    limit = ctx.settings.max_bulk_requests
    if len(parsed.requests) > limit:
        raise unprocessable(f"requests: at most {limit} per call, got {len(parsed.requests)}")
    intakes = [
        logic.Intake(
            source=item.samples.as_mapping(),
            inline=True,
            subject=item.subject,
            method=parsed.method,
            params=parsed.params,
            policy=parsed.policy,
        )
        for item in parsed.requests
    ]
    return respond(
        await run_in_threadpool(logic.submit_bulk, ctx, db, post.principal, name, intakes, post.idem)
    )


@router.post(
    "/v1/deletion-requests/{request_id}/retry",
    status_code=202,
    response_model=DeletionRequestOut,
    summary="Queue a request the acceptance policy rejected again, without uploading its samples",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        409: {"description": "the request did not fail the acceptance policy (or is queued again already)"},
        410: {"description": "its retry window ended: the forget set it uploaded was purged"},
        429: {},
    },
    openapi_extra=request_body(RetryIn, required=False),
)
async def retry_deletion_request(request_id: str, ctx: Context, post: IdempotentPost) -> JSONResponse:
    # No body (or an empty one): the same method, params and policy.
    body = jsonbody.parse_model(post.body if post.body.strip() else b"{}", RetryIn)
    return respond(await run_in_threadpool(retry.retry, ctx, post.principal, request_id, body, post.idem))


def _read(read: Callable[[ServiceContext, Session, str, str], Any]) -> Callable[..., Any]:
    """A GET of one request's resource: the reader's tenant, the request id, ``read``'s answer."""

    def route(request_id: str, ctx: Context, db: DbSession, principal: Reader) -> Any:
        return read(ctx, db, principal.tenant_id, request_id)

    return route


for _path, _model, _name, _summary, _logic in (
    ("", DeletionRequestOut, "get_deletion_request", "Get a deletion request", logic.get_request),
    (
        "/sample-digests",
        SampleDigestsOut,
        "get_sample_digests",
        "The request's sample digests (keyed per tenant)",
        logic.get_sample_digests,
    ),
):
    router.add_api_route(
        "/v1/deletion-requests/{request_id}" + _path,
        _read(_logic),
        methods=["GET"],
        response_model=_model,
        name=_name,
        summary=_summary,
    )


@router.get(
    "/v1/deletion-requests",
    response_model=DeletionRequestPage,
    summary="List deletion requests",
)
def list_deletion_requests(
    ctx: Context,
    db: DbSession,
    principal: Reader,
    query: ModelListParams,
    subject: Annotated[str | None, Query(max_length=400, description="the requests of one subject")] = None,
) -> Any:
    items, next_cursor = logic.list_requests(ctx, db, principal.tenant_id, query, subject)
    return {"items": items, "next_cursor": next_cursor}
