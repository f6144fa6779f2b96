"""Extension endpoints: API key management (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.deps import Context, DbSession, Principal, require
from service.keys import logic
from service.keys.schemas import KeyCreate, KeyCreated, KeyOut
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, Page

router = APIRouter(prefix="/v1/keys", tags=["keys"])
Admin = Annotated[Principal, Depends(require("admin"))]


@router.post("", status_code=201, response_model=KeyCreated, summary="Create an API key (shown once)")
def create_key(body: KeyCreate, session: DbSession, principal: Admin, ctx: Context) -> dict[str, Any]:
    return logic.create(session, principal, body, ctx.settings)


@router.get("", response_model=Page[KeyOut], summary="List API keys")
def list_keys(
    session: DbSession,
    principal: Admin,
    ctx: Context,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    items, next_cursor = logic.list_keys(
        session, principal, ctx.settings, tenant=tenant, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.delete(
    "/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    responses={409: {"description": "the operator tenant's last active admin key"}},
)
def revoke_key(key_id: str, session: DbSession, principal: Admin, ctx: Context) -> dict[str, Any]:
    return logic.revoke(session, principal, key_id, ctx.settings)
