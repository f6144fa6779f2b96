"""Key management: create, list and revoke API keys, with audit events."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.auth import ADMIN_SCOPE, SCOPES, create_key, ensure_tenant, hash_key
from service.db import utcnow
from service.deps import Principal
from service.errors import Problem, conflict, not_found
from service.keys.schemas import KeyCreate, KeyOut
from service.pagination import paginate
from service.settings import Settings
from service.tables import ApiKey, Tenant

_log = structlog.get_logger("service.keys")

# How an operator gets an admin key back; logged at start when the configured one was revoked.
RECOVERY_HINT = (
    "set UNLEARN_ADMIN_KEY to a new secret and restart, or run "
    "`unlearn-service create-key --tenant {tenant} --scopes admin` with the service's settings"
)


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


def _operator_tenant(session: Session, settings: Settings) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == settings.admin_tenant)).one_or_none()


def _active_admin_keys(session: Session, tenant_id: str, *, lock: bool = False) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
    if lock:
        stmt = stmt.with_for_update()
    return [k for k in session.scalars(stmt).all() if ADMIN_SCOPE in (k.scopes or ())]


def _refuse_revoking_last_admin(session: Session, key: ApiKey, settings: Settings) -> None:
    """The operator tenant's admin keys are the only ones that create keys for every tenant; with
    the last one revoked nothing could bring one back through the API (409 instead).

    Other tenants' admin keys may all be revoked: the operator can mint new ones for them.
    """
    if ADMIN_SCOPE not in (key.scopes or ()):
        return
    operator = _operator_tenant(session, settings)
    if operator is None or key.tenant_id != operator.id:
        return
    # Locked (PostgreSQL; SQLite serialises writers anyway): two concurrent revocations of the
    # last two admin keys must not both see the other one still active.
    others = [k for k in _active_admin_keys(session, operator.id, lock=True) if k.id != key.id]
    if not others:
        raise conflict(
            "this is the last active admin key of the operator tenant: revoking it would leave no key "
            "that can manage keys. Create another admin key first (POST /v1/keys), then revoke this one",
            key_id=key.id,
        )


def revoke(session: Session, principal: Principal, key_id: str, settings: Settings) -> dict[str, Any]:
    key = session.get(ApiKey, key_id)
    if key is None or (
        key.tenant_id != principal.tenant_id and not is_operator(session, principal, settings)
    ):
        raise not_found("API key", key_id)
    if key.revoked_at is None:
        _refuse_revoking_last_admin(session, key, settings)
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
    """If UNLEARN_ADMIN_KEY is set and the operator tenant has no active admin key (a new
    deployment, or one whose admin keys were all revoked), create it with every scope.

    A configured key that exists but was revoked is never revived (it was revoked for a reason,
    perhaps a leak): the operator sets a new UNLEARN_ADMIN_KEY, or runs ``create-key``.
    """
    raw = settings.admin_key
    if not raw:
        return None
    if len(raw) < 16:
        raise ValueError("UNLEARN_ADMIN_KEY must be at least 16 characters long")
    operator = _operator_tenant(session, settings)
    if operator is not None and _active_admin_keys(session, operator.id):
        return None
    if session.scalars(select(ApiKey.id).where(ApiKey.key_hash == hash_key(raw))).first() is not None:
        _log.warning(
            "no_active_admin_key",
            detail="UNLEARN_ADMIN_KEY is a revoked key and is not revived; "
            + RECOVERY_HINT.format(tenant=settings.admin_tenant),
        )
        return None
    tenant = ensure_tenant(session, settings.admin_tenant)
    try:
        # API processes starting together race to create it: the loser finds it made (unique hash).
        with session.begin_nested():
            key, _ = create_key(
                session, tenant_id=tenant.id, name="admin (bootstrap)", scopes=SCOPES, raw=raw
            )
    except IntegrityError:
        return None
    append_event(
        session,
        actor="system",
        action="key.created",
        tenant_id=tenant.id,
        object_id=key.id,
        payload={"name": key.name, "scopes": list(key.scopes), "prefix": key.prefix, "bootstrap": True},
    )
    return key
