"""API keys."""

from __future__ import annotations

from datetime import datetime

from unlearn_client.models.base import ApiModel


class ApiKey(ApiModel):
    """An API key as listed (``KeyOut``): never the secret."""

    id: str
    name: str
    tenant: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedApiKey(ApiKey):
    """The answer of ``POST /v1/keys`` (``KeyCreated``): ``key`` is shown this once only."""

    key: str
