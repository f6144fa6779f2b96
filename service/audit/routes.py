"""Routes of API.md "Audit": the tenant's events, its chain's verification and signed heads, and
the operator's view of every chain. A tenant only ever sees its own chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from service.audit.checkpoints import signed_checkpoint
from service.audit.hashing import format_ts
from service.audit.logic import chain_of
from service.audit.schemas import AuditEventOut, ChainOut, ChainVerification
from service.audit.since import Since
from service.audit.verification import verify_chain
from service.certificates.deps import SignerDep
from service.certificates.schemas import SignedDocumentOut
from service.deps import Context, DbSession, Principal, require
from service.keys.logic import is_operator
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, paginate
from service.tables import AuditCheckpoint, AuditEvent, AuditHead, Tenant

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("audit:read"))]
Admin = Annotated[Principal, Depends(require("admin"))]


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
    since: Since = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    stmt = select(AuditEvent).where(AuditEvent.chain == chain_of(principal.tenant_id))
    if model is not None:
        stmt = stmt.where(AuditEvent.model == model)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.ts >= since)
    rows, next_cursor = paginate(session, stmt, order_by=[AuditEvent.seq], limit=limit, cursor=cursor)
    return {"items": [event_out(e) for e in rows], "next_cursor": next_cursor}


@router.get(
    "/verify", response_model=ChainVerification, summary="Recompute and check the tenant's hash chain"
)
def verify(session: DbSession, principal: Auditor, signer: SignerDep) -> Any:
    return verify_chain(session, chain_of(principal.tenant_id), signer.public_key)


@router.get(
    "/checkpoints",
    response_model=Page[SignedDocumentOut],
    summary="The signed heads of the tenant's chain (newest first), to keep and check offline",
)
def list_checkpoints(
    session: DbSession, principal: Auditor, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    stmt = select(AuditCheckpoint).where(AuditCheckpoint.chain == chain_of(principal.tenant_id))
    rows, next_cursor = paginate(
        session, stmt, order_by=[AuditCheckpoint.id], descending=True, limit=limit, cursor=cursor
    )
    return {"items": [signed_checkpoint(cp) for cp in rows], "next_cursor": next_cursor}


@router.get(
    "/chains",
    response_model=Page[ChainOut],
    summary="Every chain with its length, head and verification (admin; the operator sees all tenants)",
)
def list_chains(
    session: DbSession,
    ctx: Context,
    principal: Admin,
    signer: SignerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    stmt = select(AuditHead)
    if not is_operator(session, principal, ctx.settings):
        # Another tenant's admin manages its own tenant only: its own chain is all it may see.
        stmt = stmt.where(AuditHead.chain == chain_of(principal.tenant_id))
    heads, next_cursor = paginate(session, stmt, order_by=[AuditHead.chain], limit=limit, cursor=cursor)
    chains = [head.chain for head in heads]
    names = {t.id: t.name for t in session.scalars(select(Tenant).where(Tenant.id.in_(chains)))}
    items = [{**verify_chain(session, c, signer.public_key), "tenant": names.get(c)} for c in chains]
    return {"items": items, "next_cursor": next_cursor}
