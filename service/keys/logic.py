"""Key management: create, list and revoke API keys, with audit events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.auth import SCOPES, any_key_exists, create_key, ensure_tenant
from service.db import utcnow
from service.deps import Principal
from service.errors import Problem, not_found
from service.keys.schemas import KeyCreate, KeyOut
from service.pagination import paginate
from service.settings import Settings
from service.tables import ApiKey, Tenant


def tenant_name(session: Session, tenant_id: str) -> str:
    tenant = session.get(Tenant, tenant_id)
    return tenant.name if tenant is not None else tenant_id


def is_operator(session: Session, principal: Principal, settings: Settings) -> bool:
    """An admin key of the operator's tenant manages every tenant; other admins only their own."""
    return principal.has("admin") and tenant_name(session, principal.tenant_id) == settings.admin_tenant


def key_out(session: Session, key: ApiKey) -> dict[str, Any]:
    return KeyOut(
        id=key.id,
        name=key.name,
        tenant=tenant_name(session, key.tenant_id),
        prefix=key.prefix,
        scopes=list(key.scopes),
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    ).model_dump()


def create(session: Session, principal: Principal, body: KeyCreate, settings: Settings) -> dict[str, Any]:
    if body.tenant is None:
        tenant_id = principal.tenant_id
    else:
        if body.tenant != tenant_name(session, principal.tenant_id) and not is_operator(
            session, principal, settings
        ):
            raise Problem(
                403, "Forbidden", "only an admin key of the operator tenant may create keys for other tenants"
            )
        tenant_id = ensure_tenant(session, body.tenant).id
    key, raw = create_key(session, tenant_id=tenant_id, name=body.name, scopes=body.scopes)
    append_event(
        session,
        actor=principal.actor,
        action="key.created",
        tenant_id=tenant_id,
        object_id=key.id,
        payload={"name": key.name, "scopes": list(key.scopes), "prefix": key.prefix},
    )
    return {**key_out(session, key), "key": raw}


def list_keys(
    session: Session,
    principal: Principal,
    settings: Settings,
    *,
    tenant: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(ApiKey)
    if tenant is not None and is_operator(session, principal, settings):
        t = session.scalars(select(Tenant).where(Tenant.name == tenant)).one_or_none()
        stmt = stmt.where(ApiKey.tenant_id == (t.id if t else ""))
    elif tenant is not None and tenant != tenant_name(session, principal.tenant_id):
        stmt = stmt.where(ApiKey.tenant_id == "")  # another tenant: nothing to see
    else:
        stmt = stmt.where(ApiKey.tenant_id == principal.tenant_id)
    rows, next_cursor = paginate(
        session, stmt, order_by=[ApiKey.created_at, ApiKey.id], limit=limit, cursor=cursor
    )
    return [key_out(session, k) for k in rows], next_cursor


def revoke(session: Session, principal: Principal, key_id: str, settings: Settings) -> dict[str, Any]:
    key = session.get(ApiKey, key_id)
    if key is None or (
        key.tenant_id != principal.tenant_id and not is_operator(session, principal, settings)
    ):
        raise not_found("API key", key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        append_event(
            session,
            actor=principal.actor,
            action="key.revoked",
            tenant_id=key.tenant_id,
            object_id=key.id,
            payload={"name": key.name, "prefix": key.prefix},
        )
        session.flush()
    return key_out(session, key)


def bootstrap_admin_key(session: Session, settings: Settings) -> ApiKey | None:
    """API.md: if UNLEARN_ADMIN_KEY is set and no key exists yet, create it with every scope."""
    raw = settings.admin_key
    if not raw or any_key_exists(session):
        return None
    if len(raw) < 16:
        raise ValueError("UNLEARN_ADMIN_KEY must be at least 16 characters long")
    tenant = ensure_tenant(session, settings.admin_tenant)
    key, _ = create_key(session, tenant_id=tenant.id, name="admin (bootstrap)", scopes=SCOPES, raw=raw)
    append_event(
        session,
        actor="system",
        action="key.created",
        tenant_id=tenant.id,
        object_id=key.id,
        payload={"name": key.name, "scopes": list(key.scopes), "prefix": key.prefix, "bootstrap": True},
    )
    return key
