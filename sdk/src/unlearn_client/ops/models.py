"""Models: register, list, get, change settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import Exactness, Model, Page
from unlearn_client.ops.paging import every_item


def create(
    options: Options,
    name: str,
    architecture: Mapping[str, Any],
    *,
    task: str = "classification",
    description: str | None = None,
    tags: Sequence[str] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Model]:
    """Register a model. ``architecture`` is ``{"name": "mlp", "config": {...}}``; 409 if the name exists."""
    body: dict[str, Any] = {"name": name, "task": task, "architecture": dict(architecture)}
    if description is not None:
        body["description"] = description
    if tags is not None:
        body["tags"] = list(tags)
    return (yield from fetch(options, api.CREATE_MODEL.request(json=body, idempotency_key=idempotency_key)))


def list_page(options: Options, *, limit: int | None = None, cursor: str | None = None) -> Flow[Page[Model]]:
    """One page of the tenant's models, by name."""
    return (yield from fetch(options, api.LIST_MODELS.request(params={"limit": limit, "cursor": cursor})))


def iterate(options: Options) -> EmittingFlow[Model, None]:
    """Every model, page after page."""
    yield from every_item(lambda cursor: list_page(options, cursor=cursor))


def get(options: Options, name: str) -> Flow[Model]:
    return (yield from fetch(options, api.GET_MODEL.request({"name": name})))


def update(
    options: Options,
    name: str,
    *,
    exactness: Exactness | Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Flow[Model]:
    """Change a model's settings; what is left None stays as it is.

    ``exactness`` (eventual exactness): ``{"after_erasures": N}`` and/or ``{"after_hours": T}``
    (or an :class:`Exactness`) has the service retrain the model exactly on the current data
    after N erasures or T hours since the first one not yet exact; ``{}`` turns it off.
    """
    body: dict[str, Any] = {}
    if exactness is not None:
        policy = exactness.model_dump(exclude_none=True) if isinstance(exactness, Exactness) else exactness
        body["exactness"] = dict(policy)
    if description is not None:
        body["description"] = description
    return (yield from fetch(options, api.UPDATE_MODEL.request({"name": name}, json=body)))
