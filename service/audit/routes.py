"""Routes of API.md "Audit": read the tenant's events, verify the whole chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from service.audit.logic import format_ts, verify_chain
from service.audit.schemas import AuditEventOut, ChainVerification
from service.deps import DbSession, Principal, require
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, paginate
from service.tables import AuditEvent

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("audit:read"))]


def event_out(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        # The exact string that was hashed, so an auditor can recompute the hash from this answer.
        "ts": format_ts(event.ts),
        "tenant_id": event.tenant_id,
        "actor": event.actor,
        "action": event.action,
        "model": event.model,
        "object_id": event.object_id,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


@router.get("", response_model=Page[AuditEventOut], summary="List the tenant's audit events (oldest first)")
def list_events(
    session: DbSession,
    principal: Auditor,
    model: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 time; events at or after it")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == principal.tenant_id)
    if model is not None:
        stmt = stmt.where(AuditEvent.model == model)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.ts >= since)
    rows, next_cursor = paginate(session, stmt, order_by=[AuditEvent.seq], limit=limit, cursor=cursor)
    return {"items": [event_out(e) for e in rows], "next_cursor": next_cursor}


@router.get("/verify", response_model=ChainVerification, summary="Recompute and check the whole hash chain")
def verify(session: DbSession, principal: Auditor) -> Any:
    return verify_chain(session)
