"""Sending due deliveries: claim, send (outside any transaction), record; retries with exponential
backoff, dead after ``webhook_max_attempts``.

A claim is one conditional UPDATE (due, not out of attempts) that counts the attempt, stamps a
token and pushes ``next_attempt_at`` past the longest a send can take: of several senders (the
API's thread in each API process, ``reconcile_once``) exactly one wins a row, and a sender that
dies mid-send leaves a claim that lapses, so the row is sent again (at least once). The result is
recorded only under the claim's token: a row deleted (its webhook removed) or re-sent by hand
meanwhile is left alone.

Runs as a thread of the API (``start_delivery_thread``, woken early by service/webhooks/doorbell.py)
and as a step of ``reconcile_once``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select, update

from service.context import ServiceContext
from service.db import db_time, session_scope, utcnow
from service.settings import Settings
from service.tables import Webhook, WebhookDelivery
from service.webhooks import doorbell
from service.webhooks.sealing import UnsealError, unseal
from service.webhooks.sender import Attempt, send
from service.webhooks.ssrf import AllowList
from service.webhooks.states import DUE, DeliveryStatus

log = structlog.get_logger("service.webhooks")


@dataclass(frozen=True)
class Claimed:
    id: str
    webhook_id: str
    url: str
    secret_sealed: str
    payload: dict[str, Any]
    attempts: int  # counting this one
    token: str


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base, 2×base, 4×base, …"""
    exponent = min(max(attempts - 1, 0), 60)
    return float(min(settings.webhook_backoff_seconds * 2**exponent, settings.webhook_backoff_max_seconds))


def claim_seconds(settings: Settings) -> float:
    # Longer than a send can take (connect + answer, each bounded by the timeout), with a margin.
    return 2 * settings.webhook_timeout_seconds + 60.0


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _claim(ctx: ServiceContext) -> list[Claimed]:
    settings = ctx.settings
    now = utcnow()
    due = (
        WebhookDelivery.status.in_(DUE),
        WebhookDelivery.next_attempt_at <= db_time(now),
        WebhookDelivery.attempts < settings.webhook_max_attempts,
    )
    won: dict[str, str] = {}
    with session_scope(ctx.session_factory) as s:
        ids = list(
            s.scalars(
                select(WebhookDelivery.id)
                .where(*due)
                .order_by(
                    WebhookDelivery.next_attempt_at,
                    WebhookDelivery.audit_seq,
                    WebhookDelivery.created_at,
                    WebhookDelivery.id,
                )
                .limit(settings.webhook_batch_size)
            )
        )
        for delivery_id in ids:
            token = secrets.token_hex(16)
            res = s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, *due)
                .values(
                    attempts=WebhookDelivery.attempts + 1,
                    claim_token=token,
                    last_attempt_at=now,
                    next_attempt_at=now + timedelta(seconds=claim_seconds(settings)),
                )
                .execution_options(synchronize_session=False)
            )
            if int(getattr(res, "rowcount", 0) or 0) == 1:
                won[delivery_id] = token
        if not won:
            return []
        rows = s.execute(
            select(WebhookDelivery, Webhook.url, Webhook.secret_sealed)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id.in_(list(won)))
            .execution_options(populate_existing=True)
        ).all()
        found = {
            d.id: Claimed(d.id, d.webhook_id, url, sealed, dict(d.payload), d.attempts, won[d.id])
            for d, url, sealed in rows
        }
        return [found[i] for i in ids if i in found]  # in the order they became due


def _attempt(ctx: ServiceContext, allow: AllowList, claimed: Claimed) -> Attempt:
    try:
        secret = unseal(ctx.secret, claimed.webhook_id, claimed.secret_sealed)
    except UnsealError as exc:
        return Attempt(False, None, str(exc))
    return send(ctx.settings, allow, claimed.url, claimed.id, secret, body_bytes(claimed.payload))


def _record(ctx: ServiceContext, claimed: Claimed, attempt: Attempt) -> DeliveryStatus:
    settings = ctx.settings
    now = utcnow()
    values: dict[str, Any] = {"claim_token": None, "last_status_code": attempt.status_code}
    if attempt.ok:
        status = DeliveryStatus.DELIVERED
        values.update(delivered_at=now, last_error=None, next_attempt_at=now)
    else:
        dead = claimed.attempts >= settings.webhook_max_attempts
        status = DeliveryStatus.DEAD if dead else DeliveryStatus.FAILED
        delay = 0.0 if dead else backoff(settings, claimed.attempts)
        values.update(last_error=(attempt.error or "")[:2000], next_attempt_at=now + timedelta(seconds=delay))
    with session_scope(ctx.session_factory) as s:
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.id, WebhookDelivery.claim_token == claimed.token)
            .values(status=status, **values)
            .execution_options(synchronize_session=False)
        )
    (log.info if attempt.ok else log.warning)(
        "webhook_delivery",
        delivery_id=claimed.id,
        webhook_id=claimed.webhook_id,
        event_type=claimed.payload.get("type"),
        attempt=claimed.attempts,
        status=str(status),
        status_code=attempt.status_code,
        error=attempt.error,
    )
    return status


def _bury_abandoned(ctx: ServiceContext) -> int:
    """Rows out of attempts whose last claim lapsed (the sender died mid-send, or the setting was
    lowered): dead, so they show up as such instead of waiting forever."""
    now = utcnow()
    with session_scope(ctx.session_factory) as s:
        res = s.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.status.in_(DUE),
                WebhookDelivery.next_attempt_at <= db_time(now),
                WebhookDelivery.attempts >= ctx.settings.webhook_max_attempts,
            )
            .values(
                status=DeliveryStatus.DEAD,
                claim_token=None,
                last_error="out of attempts (the last one did not report back)",
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(res, "rowcount", 0) or 0)


def deliver_due(ctx: ServiceContext) -> dict[str, int]:
    """One pass: every due delivery (up to ``webhook_batch_size``) is attempted once."""
    stats = {"webhooks_delivered": 0, "webhooks_retrying": 0, "webhooks_dead": _bury_abandoned(ctx)}
    claimed = _claim(ctx)
    if not claimed:
        return stats
    allow = AllowList.from_settings(ctx.settings)
    # One receiver's deliveries one after the other, in the order their events happened (so
    # nobody gets a burst of parallel requests, and order holds while nothing fails); different
    # receivers in parallel, so a slow one does not hold up the others.
    by_webhook: dict[str, list[Claimed]] = {}
    for c in claimed:
        by_webhook.setdefault(c.webhook_id, []).append(c)

    def one_receiver(group: list[Claimed]) -> list[DeliveryStatus]:
        return [_record(ctx, c, _attempt(ctx, allow, c)) for c in group]

    workers = min(ctx.settings.webhook_concurrency, len(by_webhook))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook-send") as pool:
        outcomes = [o for group in pool.map(one_receiver, by_webhook.values()) for o in group]
    key = {
        DeliveryStatus.DELIVERED: "webhooks_delivered",
        DeliveryStatus.FAILED: "webhooks_retrying",
        DeliveryStatus.DEAD: "webhooks_dead",
    }
    for outcome in outcomes:
        stats[key[outcome]] += 1
    return stats


def start_delivery_thread(ctx: ServiceContext) -> Callable[[], None]:
    """Deliver at once, then whenever a commit in this process rings the doorbell, or every
    ``webhook_poll_seconds`` (deliveries written by workers, retries coming due).

    Returns a callable that stops the thread (and waits for the current pass to finish).
    """
    stop = threading.Event()
    bell = doorbell.register()
    poll = float(ctx.settings.webhook_poll_seconds)

    def loop() -> None:
        while not stop.is_set():
            bell.clear()
            try:
                deliver_due(ctx)
            except Exception as exc:  # one bad pass (database down) must not end the loop
                with contextlib.suppress(Exception):
                    log.warning("webhook_delivery_failed", error=repr(exc))
            bell.wait(poll)

    thread = threading.Thread(target=loop, name="webhook-delivery", daemon=True)
    thread.start()

    def stop_thread() -> None:
        stop.set()
        bell.set()
        thread.join(timeout=30)
        doorbell.unregister(bell)

    return stop_thread
