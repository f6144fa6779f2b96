"""Webhooks: register, list, get, delete; their deliveries: list, get, re-send a dead one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, call, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import CreatedWebhook, Delivery, Page, Webhook
from unlearn_client.ops.paging import every_item


def create(
    options: Options,
    url: str,
    events: Sequence[str],
    *,
    model: str | None = None,
    description: str | None = None,
    idempotency_key: str | None = None,
) -> Flow[CreatedWebhook]:
    """Register a callback URL for ``events`` (e.g. ``["job.succeeded", "deletion.completed"]``),
    of one model's or (``model`` None) of the whole tenant. The answer's ``secret`` signs the
    deliveries (Standard Webhooks) and is shown this once only: store it."""
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if model is not None:
        body["model"] = model
    if description is not None:
        body["description"] = description
    return (yield from fetch(options, api.CREATE_WEBHOOK.request(json=body, idempotency_key=idempotency_key)))


def list_page(
    options: Options, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[Webhook]]:
    """One page of the tenant's webhooks (never their secrets)."""
    return (yield from fetch(options, api.LIST_WEBHOOKS.request(params={"limit": limit, "cursor": cursor})))


def iterate(options: Options) -> EmittingFlow[Webhook, None]:
    yield from every_item(lambda cursor: list_page(options, cursor=cursor))


def get(options: Options, webhook_id: str) -> Flow[Webhook]:
    return (yield from fetch(options, api.GET_WEBHOOK.request({"webhook_id": webhook_id})))


def delete(options: Options, webhook_id: str) -> Flow[None]:
    """Delete a webhook, its secret and its deliveries (pending ones are not sent)."""
    yield from call(options, api.DELETE_WEBHOOK.request({"webhook_id": webhook_id}).spec)


def list_deliveries(
    options: Options,
    webhook_id: str,
    *,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Flow[Page[Delivery]]:
    """One page of a webhook's deliveries, newest first; ``status``: pending | failed | delivered | dead."""
    params = {"status": status, "limit": limit, "cursor": cursor}
    request = api.LIST_DELIVERIES.request({"webhook_id": webhook_id}, params=params)
    return (yield from fetch(options, request))


def iterate_deliveries(
    options: Options, webhook_id: str, *, status: str | None = None
) -> EmittingFlow[Delivery, None]:
    yield from every_item(lambda cursor: list_deliveries(options, webhook_id, status=status, cursor=cursor))


def get_delivery(options: Options, webhook_id: str, delivery_id: str) -> Flow[Delivery]:
    request = api.GET_DELIVERY.request({"webhook_id": webhook_id, "delivery_id": delivery_id})
    return (yield from fetch(options, request))


def retry_delivery(options: Options, webhook_id: str, delivery_id: str) -> Flow[Delivery]:
    """Send a dead delivery again: back to pending with a fresh set of attempts (409 Conflict if
    it is not dead)."""
    request = api.RETRY_DELIVERY.request({"webhook_id": webhook_id, "delivery_id": delivery_id})
    return (yield from fetch(options, request))
