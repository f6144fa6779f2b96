"""Registered training sets: create, list, get, upload a version, list and get versions, and
erase a data subject (or sample ids) from a set and every model trained on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import Dataset, DatasetVersion, Erasure, Page
from unlearn_client.ops.paging import every_item
from unlearn_client.spec import FileInput, Upload


def create(
    options: Options,
    name: str,
    task: str,
    *,
    description: str | None = None,
    idempotency_key: str | None = None,
) -> Flow[Dataset]:
    """Register a training set (``task`` as for models, e.g. classification)."""
    body: dict[str, Any] = {"name": name, "task": task}
    if description is not None:
        body["description"] = description
    return (yield from fetch(options, api.CREATE_DATASET.request(json=body, idempotency_key=idempotency_key)))


def list_page(
    options: Options, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[Dataset]]:
    return (yield from fetch(options, api.LIST_DATASETS.request(params={"limit": limit, "cursor": cursor})))


def iterate(options: Options) -> EmittingFlow[Dataset, None]:
    yield from every_item(lambda cursor: list_page(options, cursor=cursor))


def get(options: Options, name: str) -> Flow[Dataset]:
    return (yield from fetch(options, api.GET_DATASET.request({"name": name})))


def upload(
    options: Options,
    name: str,
    data: FileInput,
    *,
    description: str | None = None,
    idempotency_key: str | None = None,
) -> Flow[DatasetVersion]:
    """Upload a version: safetensors or .npz with the data columns, ``sample_ids`` and optionally
    ``subject_ids`` (stored as keyed digests, never returned)."""
    request = api.UPLOAD_DATASET_VERSION.request(
        {"name": name},
        files={"data": Upload.of(data, "data.safetensors")},
        data={"description": description} if description is not None else None,
        idempotency_key=idempotency_key,
    )
    return (yield from fetch(options, request))


def list_versions(
    options: Options, name: str, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[DatasetVersion]]:
    request = api.LIST_DATASET_VERSIONS.request({"name": name}, params={"limit": limit, "cursor": cursor})
    return (yield from fetch(options, request))


def iterate_versions(options: Options, name: str) -> EmittingFlow[DatasetVersion, None]:
    yield from every_item(lambda cursor: list_versions(options, name, cursor=cursor))


def get_version(options: Options, name: str, version: int | str = "latest") -> Flow[DatasetVersion]:
    return (yield from fetch(options, api.GET_DATASET_VERSION.request({"name": name, "v": version})))


def erase(
    options: Options,
    name: str,
    *,
    subject: str | None = None,
    sample_ids: Sequence[str | int] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Erasure]:
    """Erase a data subject, or sample ids, from the training set and from every model trained
    on it: one deletion request per model; follow it with ``erasures.wait``. Carries an
    Idempotency-Key, so a retry after a lost answer does not erase twice."""
    if subject is None and sample_ids is None:
        raise ValueError("pass subject, sample_ids, or both")
    body: dict[str, Any] = {}
    if subject is not None:
        body["subject"] = subject
    if sample_ids is not None:
        body["sample_ids"] = list(sample_ids)
    request = api.SUBMIT_ERASURE.request({"name": name}, json=body, idempotency_key=idempotency_key)
    return (yield from fetch(options, request))
