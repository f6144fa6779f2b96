"""Jobs: list, get, cancel, and training jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import Job, Page
from unlearn_client.ops.paging import every_item


def list_page(
    options: Options,
    *,
    model: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Flow[Page[Job]]:
    """One page of jobs, newest first; ``model`` and ``status`` filter."""
    params = {"model": model, "status": status, "limit": limit, "cursor": cursor}
    return (yield from fetch(options, api.LIST_JOBS.request(params=params)))


def iterate(
    options: Options, *, model: str | None = None, status: str | None = None
) -> EmittingFlow[Job, None]:
    yield from every_item(lambda cursor: list_page(options, model=model, status=status, cursor=cursor))


def get(options: Options, job_id: str) -> Flow[Job]:
    return (yield from fetch(options, api.GET_JOB.request({"job_id": job_id})))


def cancel(options: Options, job_id: str) -> Flow[Job]:
    """Cancel a queued job at once, or ask a running one to stop at its next step; 409 (Conflict)
    if it already finished."""
    return (yield from fetch(options, api.CANCEL_JOB.request({"job_id": job_id})))


def train(
    options: Options,
    model: str,
    dataset: str,
    *,
    dataset_version: int | str | None = None,
    recipe: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Job]:
    """Train a new version of ``model`` from a registered dataset version (default: its latest)
    and a recipe (default: the one of the model's latest version), as a job on the queue
    (``kind == "train"``). Answered 202 at once; follow it with ``wait(job)``."""
    body: dict[str, Any] = {"dataset": dataset}
    if dataset_version is not None:
        body["dataset_version"] = str(dataset_version)
    if recipe is not None:
        body["recipe"] = dict(recipe)
    request = api.CREATE_TRAINING_JOB.request({"name": model}, json=body, idempotency_key=idempotency_key)
    return (yield from fetch(options, request))
