"""The audit log: list events, verify the hash chain."""

from __future__ import annotations

from datetime import datetime

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import AuditEvent, ChainVerification, Page
from unlearn_client.ops.paging import every_item


def _since(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def list_page(
    options: Options,
    *,
    model: str | None = None,
    action: str | None = None,
    since: datetime | str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Flow[Page[AuditEvent]]:
    """One page of the tenant's audit events, oldest first; ``since`` is a time (ISO 8601)."""
    params = {"model": model, "action": action, "since": _since(since), "limit": limit, "cursor": cursor}
    return (yield from fetch(options, api.LIST_AUDIT.request(params=params)))


def iterate(
    options: Options,
    *,
    model: str | None = None,
    action: str | None = None,
    since: datetime | str | None = None,
) -> EmittingFlow[AuditEvent, None]:
    yield from every_item(
        lambda cursor: list_page(options, model=model, action=action, since=since, cursor=cursor)
    )


def verify(options: Options) -> Flow[ChainVerification]:
    """Have the server recompute the whole hash chain: ``ok`` and, if broken, the first bad seq."""
    return (yield from fetch(options, api.VERIFY_AUDIT.request()))
