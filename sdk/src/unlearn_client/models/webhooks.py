"""Webhooks and their deliveries (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from unlearn_client.models.base import ApiModel


class Webhook(ApiModel):
    """A registered callback URL and the events it hears (``WebhookOut``); ``model`` None: every
    model of the tenant, and its erasures."""

    id: str
    url: str
    events: list[str]
    model: str | None = None
    description: str | None = None
    created_at: datetime


class CreatedWebhook(Webhook):
    """The answer of ``POST /v1/webhooks`` (``WebhookCreated``): ``secret`` (``whsec_...``, to
    verify the signatures of deliveries) is shown this once only."""

    secret: str


class Delivery(ApiModel):
    """One event sent (at least once) to a webhook (``DeliveryOut``).

    ``status``: pending | failed (to be tried again) | delivered | dead (attempts used up; see
    ``client.webhooks.retry_delivery``)."""

    id: str  # also the webhook-id header: the same on every attempt
    webhook_id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)
