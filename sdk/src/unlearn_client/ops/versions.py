"""Versions: upload (checkpoint + optional eval set), list, get, checkpoint headers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, call, fetch
from unlearn_client.digest import announced_sha256
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import CheckpointInfo, Page, Version
from unlearn_client.ops.paging import every_item
from unlearn_client.spec import FileInput, Upload

# A version is a number or an alias the server resolves ("latest").
VersionRef = int | str


def upload(
    options: Options,
    model: str,
    checkpoint: FileInput,
    eval_set: FileInput | None = None,
    *,
    description: str | None = None,
    dataset: str | None = None,
    dataset_version: int | None = None,
    recipe: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Version]:
    """Upload a safetensors checkpoint (a path, bytes or a binary file) as the model's next version,
    with an optional holdout set for verification; 422 if it does not load into the architecture.

    ``dataset`` (and ``dataset_version``, default its latest) names the registered training set
    it was trained on, so that erasures of that set reach this model; ``recipe`` says how it was
    trained (what ``retrain`` replays)."""
    files = {"checkpoint": Upload.of(checkpoint, "model.safetensors")}
    if eval_set is not None:
        files["eval_set"] = Upload.of(eval_set, "eval.safetensors")
    fields = {
        "description": description,
        "dataset": dataset,
        "dataset_version": str(dataset_version) if dataset_version is not None else None,
        "recipe": json.dumps(dict(recipe)) if recipe is not None else None,
    }
    data = {k: v for k, v in fields.items() if v is not None}
    request = api.UPLOAD_VERSION.request(
        {"name": model}, files=files, data=data, idempotency_key=idempotency_key
    )
    return (yield from fetch(options, request))


def list_page(
    options: Options, model: str, *, limit: int | None = None, cursor: str | None = None
) -> Flow[Page[Version]]:
    """One page of a model's versions, oldest first."""
    request = api.LIST_VERSIONS.request({"name": model}, params={"limit": limit, "cursor": cursor})
    return (yield from fetch(options, request))


def iterate(options: Options, model: str) -> EmittingFlow[Version, None]:
    """Every version of a model, page after page."""
    yield from every_item(lambda cursor: list_page(options, model, cursor=cursor))


def get(options: Options, model: str, version: VersionRef = "latest") -> Flow[Version]:
    return (yield from fetch(options, api.GET_VERSION.request({"name": model, "v": version})))


def retire(options: Options, model: str, version: VersionRef) -> Flow[Version]:
    """Retire a version: its checkpoint answers 410 Gone, its blob goes after a grace period."""
    return (yield from fetch(options, api.RETIRE_VERSION.request({"name": model, "v": version})))


def rollback(
    options: Options, model: str, to_version: int, *, idempotency_key: str | None = None
) -> Flow[Version]:
    """Make an earlier version's checkpoint the latest again, as a new version (never one that
    held erased data: 409)."""
    request = api.ROLLBACK.request(
        {"name": model}, json={"to_version": to_version}, idempotency_key=idempotency_key
    )
    return (yield from fetch(options, request))


def checkpoint_info(options: Options, model: str, version: VersionRef = "latest") -> Flow[CheckpointInfo]:
    """Size and sha256 of a version's checkpoint (a HEAD request: nothing is downloaded)."""
    response = yield from call(options, api.HEAD_CHECKPOINT.request({"name": model, "v": version}).spec)
    return CheckpointInfo(
        sha256=announced_sha256(response.headers),
        size_bytes=int(response.headers.get("content-length", "0")),
        etag=response.headers.get("etag", ""),
        content_location=response.headers.get("content-location"),
        filename=_filename(response.headers.get("content-disposition")),
    )


_FILENAME = re.compile(r'filename="([^"]+)"')


def _filename(disposition: str | None) -> str | None:
    match = _FILENAME.search(disposition or "")
    # Only the last path component: a name from the server must not point outside the target folder.
    name = Path(match.group(1)).name if match else ""
    return name if name not in ("", ".", "..") else None
