"""Registering, listing and removing webhooks; reading and re-sending their deliveries.

A tenant sees only its own webhooks: another tenant's is indistinguishable from a missing one
(404). Changes are audited (webhook.created / .deleted / .delivery_retried) with the URL's host
only: a URL may carry a token in its path or query, and the audit log keeps what it is given.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.db import utcnow
from service.deps import Principal
from service.errors import Problem, conflict, unprocessable
from service.lookup import one_or_404
from service.pagination import paginate
from service.registry.logic import get_model
from service.tables import Model, Webhook, WebhookDelivery, new_id
from service.unit_of_work import call_after_commit
from service.webhooks import doorbell
from service.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookOut
from service.webhooks.sealing import seal
from service.webhooks.signing import generate_secret
from service.webhooks.ssrf import AllowList, RefusedDestination, check, parse_url
from service.webhooks.states import DUE, DeliveryStatus


def webhook_out(hook: Webhook, model_name: str | None) -> dict[str, Any]:
    return WebhookOut(
        id=hook.id,
        url=hook.url,
        events=list(hook.events),
        model=model_name,
        description=hook.description,
        created_at=hook.created_at,
    ).model_dump(mode="json")


def delivery_out(d: WebhookDelivery) -> dict[str, Any]:
    return DeliveryOut(
        id=d.id,
        webhook_id=d.webhook_id,
        event=d.event_type,
        status=DeliveryStatus(d.status),
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.status in DUE else None,
        last_attempt_at=d.last_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
        payload=dict(d.payload),
    ).model_dump(mode="json")


def _host(url: str) -> str:
    try:
        return parse_url(url).host
    except RefusedDestination:
        return ""


def _model_name(db: Session, model_id: str | None) -> str | None:
    if model_id is None:
        return None
    return db.scalars(select(Model.name).where(Model.id == model_id)).one_or_none()


def _get(db: Session, tenant_id: str, webhook_id: str) -> Webhook:
    stmt = select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
    return one_or_404(db, stmt, "webhook", webhook_id)


def check_destination(ctx: ServiceContext, url: str) -> None:
    """422 unless the URL may be called now (resolved here; again at every delivery).

    Called before the request's transaction starts: a DNS lookup must not hold SQLite's write lock.
    """
    try:
        check(url, AllowList.from_settings(ctx.settings))
    except RefusedDestination as exc:
        raise unprocessable(
            str(exc), errors=[{"loc": ["body", "url"], "msg": str(exc), "type": "refused_destination"}]
        ) from exc


def create(ctx: ServiceContext, db: Session, principal: Principal, body: WebhookCreate) -> dict[str, Any]:
    model_id = get_model(db, principal.tenant_id, body.model).id if body.model is not None else None
    count = db.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.tenant_id == principal.tenant_id)
    )
    limit = ctx.settings.webhook_max_per_tenant
    if (count or 0) >= limit:
        # Every event is written once per matching webhook, in the transaction of its change.
        raise conflict(f"the tenant has {limit} webhooks, the most allowed; delete one first", limit=limit)
    secret = generate_secret()
    hook = Webhook(
        id=new_id("whk"),
        tenant_id=principal.tenant_id,
        model_id=model_id,
        url=body.url,
        events=[str(e) for e in body.events],
        description=body.description,
        created_by_key=principal.key_id,
        created_at=utcnow(),
    )
    hook.secret_sealed = seal(ctx.secret, hook.id, secret)
    db.add(hook)
    db.flush()
    append_event(
        db,
        actor=principal.actor,
        action="webhook.created",
        tenant_id=principal.tenant_id,
        model=body.model,
        object_id=hook.id,
        payload={"host": _host(hook.url), "events": list(hook.events), "model": body.model},
    )
    return {**webhook_out(hook, body.model), "secret": secret}


def list_webhooks(
    db: Session, principal: Principal, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(Webhook).where(Webhook.tenant_id == principal.tenant_id)
    rows, next_cursor = paginate(
        db, stmt, order_by=[Webhook.created_at, Webhook.id], limit=limit, cursor=cursor
    )
    ids = {h.model_id for h in rows if h.model_id is not None}
    names = dict(db.execute(select(Model.id, Model.name).where(Model.id.in_(ids))).all()) if ids else {}
    return [webhook_out(h, names.get(h.model_id) if h.model_id else None) for h in rows], next_cursor


def get(db: Session, principal: Principal, webhook_id: str) -> dict[str, Any]:
    hook = _get(db, principal.tenant_id, webhook_id)
    return webhook_out(hook, _model_name(db, hook.model_id))


def remove(db: Session, principal: Principal, webhook_id: str) -> None:
    """The webhook, its sealed secret and its deliveries (pending ones are not sent)."""
    hook = _get(db, principal.tenant_id, webhook_id)
    model_name = _model_name(db, hook.model_id)
    dropped = db.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    db.delete(hook)
    db.flush()
    append_event(
        db,
        actor=principal.actor,
        action="webhook.deleted",
        tenant_id=principal.tenant_id,
        model=model_name,
        object_id=webhook_id,
        payload={"host": _host(hook.url), "deliveries_dropped": int(getattr(dropped, "rowcount", 0) or 0)},
    )


def list_deliveries(
    db: Session,
    principal: Principal,
    webhook_id: str,
    *,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    hook = _get(db, principal.tenant_id, webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    rows, next_cursor = paginate(
        db,
        stmt,
        order_by=[WebhookDelivery.created_at, WebhookDelivery.id],
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return [delivery_out(d) for d in rows], next_cursor


def _delivery(
    db: Session, tenant_id: str, webhook_id: str, delivery_id: str, *, lock: bool
) -> WebhookDelivery:
    hook = _get(db, tenant_id, webhook_id)
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == hook.id
    )
    return one_or_404(db, stmt, "delivery", delivery_id, lock=lock)


def get_delivery(db: Session, principal: Principal, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    return delivery_out(_delivery(db, principal.tenant_id, webhook_id, delivery_id, lock=False))


def retry(db: Session, principal: Principal, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    """A dead delivery goes back to pending, with a fresh set of attempts; sent at once."""
    d = _delivery(db, principal.tenant_id, webhook_id, delivery_id, lock=True)
    if d.status != DeliveryStatus.DEAD:
        raise Problem(
            409,
            "Conflict",
            f"delivery {delivery_id} is {d.status}; only a dead delivery is re-sent by hand "
            "(pending and failed ones are retried on their own)",
            status_of_delivery=d.status,
        )
    previous = d.attempts
    d.status = DeliveryStatus.PENDING
    d.attempts = 0
    d.claim_token = None
    d.next_attempt_at = utcnow()
    db.flush()
    append_event(
        db,
        actor=principal.actor,
        action="webhook.delivery_retried",
        tenant_id=principal.tenant_id,
        object_id=d.id,
        payload={"webhook_id": webhook_id, "event": d.event_type, "previous_attempts": previous},
    )
    call_after_commit(db, doorbell.ring)
    return delivery_out(d)
