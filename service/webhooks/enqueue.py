"""The outbox side of webhooks: one delivery row per matching subscription, written in the
transaction of the audit event (and so of the state change) it announces.

``append_event`` calls :func:`enqueue_deliveries` after each append: a delivery exists exactly
when its change committed, and it survives restarts until sent (at least once).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import utcnow
from service.tables import AuditEvent, Model, Webhook, WebhookDelivery
from service.unit_of_work import call_after_commit
from service.webhooks import doorbell
from service.webhooks.events import DERIVATIONS, announcements, body
from service.webhooks.states import DeliveryStatus


def enqueue_deliveries(session: Session, event: AuditEvent) -> int:
    """Write the deliveries this audit event causes; returns how many."""
    # Most events announce nothing (downloads, keys, datasets): no query for them.
    if event.tenant_id is None or event.action not in DERIVATIONS:
        return 0
    hooks = list(session.scalars(select(Webhook).where(Webhook.tenant_id == event.tenant_id)))
    if not hooks:
        return 0
    model_id: str | None = None
    if event.model is not None and any(h.model_id is not None for h in hooks):
        model_id = session.scalars(
            select(Model.id).where(Model.tenant_id == event.tenant_id, Model.name == event.model)
        ).one_or_none()
    now = utcnow()
    rows: list[WebhookDelivery] = []
    # Rows of one event are made a microsecond apart: created_at orders them for the sender.
    tick = timedelta(microseconds=1)
    for announcement in announcements(session, event):
        for hook in hooks:
            if announcement.type not in hook.events:
                continue
            # A model's webhook hears that model's events only; tenant-wide events (erasures,
            # which span models) go to the tenant's webhooks.
            if hook.model_id is not None and (announcement.model is None or hook.model_id != model_id):
                continue
            rows.append(
                WebhookDelivery(
                    webhook_id=hook.id,
                    tenant_id=event.tenant_id,
                    event_type=str(announcement.type),
                    payload=body(announcement, event),
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    audit_chain=event.chain,
                    audit_seq=event.seq,
                    created_at=now + tick * len(rows),
                )
            )
    if rows:
        session.add_all(rows)
        session.flush()
        call_after_commit(session, doorbell.ring)
    return len(rows)
