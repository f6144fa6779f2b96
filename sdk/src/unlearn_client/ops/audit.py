"""The audit log: list events, verify the hash chain."""

from __future__ import annotations

from datetime import datetime

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import AuditEvent, ChainStatus, ChainVerification, Page, SignedDocument
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


def checkpoints_page(
    options: Options, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[SignedDocument]]:
    """The signed heads of the tenant's chain, newest first: keep them to check the chain later
    against what the service signed then."""
    request = api.LIST_AUDIT_CHECKPOINTS.request(params={"limit": limit, "cursor": cursor})
    return (yield from fetch(options, request))


def iterate_checkpoints(options: Options) -> EmittingFlow[SignedDocument, None]:
    yield from every_item(lambda cursor: checkpoints_page(options, cursor=cursor))


def chains_page(
    options: Options, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[ChainStatus]]:
    """Every chain with its verification (admin; the operator sees every tenant's)."""
    return (
        yield from fetch(options, api.LIST_AUDIT_CHAINS.request(params={"limit": limit, "cursor": cursor}))
    )


def iterate_chains(options: Options) -> EmittingFlow[ChainStatus, None]:
    yield from every_item(lambda cursor: chains_page(options, cursor=cursor))
