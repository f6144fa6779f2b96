"""API keys (admin scope): create, list, revoke."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import ApiKey, CreatedApiKey, Page
from unlearn_client.ops.paging import every_item


def create(
    options: Options,
    name: str,
    scopes: Sequence[str],
    *,
    tenant: str | None = None,
    idempotency_key: str | None = None,
) -> Flow[CreatedApiKey]:
    """Create a key; its secret (``.key``) is in this answer only."""
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if tenant is not None:
        body["tenant"] = tenant
    return (yield from fetch(options, api.CREATE_KEY.request(json=body, idempotency_key=idempotency_key)))


def list_page(
    options: Options, *, tenant: str | None = None, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[ApiKey]]:
    params = {"tenant": tenant, "limit": limit, "cursor": cursor}
    return (yield from fetch(options, api.LIST_KEYS.request(params=params)))


def iterate(options: Options, *, tenant: str | None = None) -> EmittingFlow[ApiKey, None]:
    yield from every_item(lambda cursor: list_page(options, tenant=tenant, cursor=cursor))


def revoke(options: Options, key_id: str) -> Flow[ApiKey]:
    """Revoke a key (revoking a revoked key changes nothing)."""
    return (yield from fetch(options, api.REVOKE_KEY.request({"key_id": key_id})))
