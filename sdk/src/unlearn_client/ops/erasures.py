"""Erasures (made by ``datasets.erase``): get, list, receipts, and waiting for all their requests."""

from __future__ import annotations

import time

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.errors import WaitTimeout
from unlearn_client.flow import EmittingFlow, Flow, Sleep
from unlearn_client.models import TERMINAL_REQUEST_STATUSES, Erasure, Page, Receipt, SignedDocument
from unlearn_client.ops.follow import wait_request
from unlearn_client.ops.paging import every_item
from unlearn_client.progress import JobProgress


def get(options: Options, erasure_id: str) -> Flow[Erasure]:
    return (yield from fetch(options, api.GET_ERASURE.request({"erasure_id": erasure_id})))


def list_page(
    options: Options,
    *,
    dataset: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Flow[Page[Erasure]]:
    params = {"dataset": dataset, "subject": subject, "limit": limit, "cursor": cursor}
    return (yield from fetch(options, api.LIST_ERASURES.request(params=params)))


def iterate(
    options: Options, *, dataset: str | None = None, subject: str | None = None
) -> EmittingFlow[Erasure, None]:
    yield from every_item(lambda cursor: list_page(options, dataset=dataset, subject=subject, cursor=cursor))


def receipt(options: Options, erasure_id: str) -> Flow[Receipt]:
    """What the erasure did, across every model (a free-form document)."""
    return (yield from fetch(options, api.ERASURE_RECEIPT.request({"erasure_id": erasure_id})))


def signed_receipt(options: Options, erasure_id: str) -> Flow[SignedDocument]:
    request = api.SIGNED_ERASURE_RECEIPT.request({"erasure_id": erasure_id}, params={"signed": "true"})
    return (yield from fetch(options, request))


def wait(
    options: Options, erasure: Erasure | str, *, progress: JobProgress = False, timeout: float | None = None
) -> Flow[Erasure]:
    """Follow every deletion request of the erasure to its end, then the erasure itself (which
    ends once the dataset is rewritten without the samples); return it."""
    started = time.monotonic()
    current = erasure if isinstance(erasure, Erasure) else (yield from get(options, erasure))
    while not current.is_terminal:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise WaitTimeout(current.id, timeout or 0.0)
        pending = [r for r in current.deletion_requests if r.status not in TERMINAL_REQUEST_STATUSES]
        for request in pending:
            yield from wait_request(options, request.id, progress=progress, timeout=left)
        if not pending:
            yield Sleep(options.poll_interval if left is None else min(options.poll_interval, left))
        current = yield from get(options, current.id)
    return current
