"""Webhook endpoints: thin HTTP adapters over ``service.webhooks.logic``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from service.deps import Context, DbSession, Principal, require
from service.pagination import DEFAULT_LIMIT, Cursor, Limit
from service.webhooks import logic
from service.webhooks.schemas import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
)
from service.webhooks.states import DeliveryStatus

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Reader = Annotated[Principal, Depends(require("webhooks:read"))]
Writer = Annotated[Principal, Depends(require("webhooks:write"))]


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    summary="Register a webhook (its signing secret is shown once)",
    responses={
        404: {"description": "the named model does not exist"},
        409: {"description": "the tenant has the most webhooks allowed (webhook_max_per_tenant)"},
        422: {"description": "an unknown event, or a destination that is refused (SSRF rules)"},
    },
)
def create_webhook(body: WebhookCreate, db: DbSession, principal: Writer, ctx: Context) -> Any:
    logic.check_destination(ctx, body.url)  # before the transaction: it resolves the host
    out = logic.create(ctx, db, principal, body)
    return JSONResponse(out, status_code=201, headers={"Location": f"/v1/webhooks/{out['id']}"})


@router.get("", response_model=WebhookPage, summary="List webhooks")
def list_webhooks(
    db: DbSession, principal: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    items, next_cursor = logic.list_webhooks(db, principal, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{webhook_id}", response_model=WebhookOut, summary="Get a webhook")
def get_webhook(webhook_id: str, db: DbSession, principal: Reader) -> Any:
    return logic.get(db, principal, webhook_id)


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook and its deliveries")
def delete_webhook(webhook_id: str, db: DbSession, principal: Writer) -> Response:
    logic.remove(db, principal, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, summary="List a webhook's deliveries")
def list_deliveries(
    webhook_id: str,
    db: DbSession,
    principal: Reader,
    status: Annotated[DeliveryStatus | None, Query(description="pending | failed | delivered | dead")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    items, next_cursor = logic.list_deliveries(
        db, principal, webhook_id, status=status, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryOut, summary="Get a delivery")
def get_delivery(webhook_id: str, delivery_id: str, db: DbSession, principal: Reader) -> Any:
    return logic.get_delivery(db, principal, webhook_id, delivery_id)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    summary="Re-send a dead delivery",
    responses={409: {"description": "the delivery is not dead (pending and failed ones retry on their own)"}},
)
def retry_delivery(webhook_id: str, delivery_id: str, db: DbSession, principal: Writer) -> Any:
    return JSONResponse(logic.retry(db, principal, webhook_id, delivery_id), status_code=202)
