"""Webhook and delivery bodies (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.registry.schemas import NAME_PATTERN
from service.webhooks.events import EVENT_TYPES, EventType
from service.webhooks.ssrf import MAX_URL_LENGTH
from service.webhooks.states import DeliveryStatus


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=MAX_URL_LENGTH, description="http(s) URL the events are POSTed to"
    )
    events: list[EventType] = Field(
        min_length=1, max_length=len(EVENT_TYPES), description=f"any of: {', '.join(EVENT_TYPES)}"
    )
    model: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="only this model's events; default: the whole tenant"
    )
    description: str | None = Field(default=None, max_length=1000)

    @field_validator("url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[EventType]) -> list[EventType]:
        return sorted(set(value))


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    model: str | None = Field(description="null: every model of the tenant, and its erasures")
    description: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="the signing secret (whsec_…); shown only in this answer: store it now. "
        "The service keeps it sealed (encrypted) and never returns it again"
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None = None


class DeliveryOut(BaseModel):
    id: str = Field(description="also the webhook-id header: the same on every attempt")
    webhook_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="when it is tried next (pending and failed only)")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any] = Field(description="the body that is sent")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = None
