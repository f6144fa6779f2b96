"""Models and their immutable, content-addressed versions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from torch import nn

from service.audit.logic import append_event
from service.context import ServiceContext
from service.db import session_scope
from service.errors import Problem, conflict
from service.lookup import VersionRef, one_or_404, version_number
from service.registry.hfconfig import inline_hf_config
from service.tables import Model, ModelVersion
from unlearning import build_model
from unlearning.architectures.registry import ModelSpec
from unlearning.checkpoints import sha256_bytes, validate_checkpoint
from unlearning.data import num_samples, validate_dataset


def get_model(session: Session, tenant_id: str, name: str, *, for_update: bool = False) -> Model:
    """The tenant's model by name; another tenant's model is indistinguishable from a missing one."""
    stmt = select(Model).where(Model.tenant_id == tenant_id, Model.name == name)
    return one_or_404(session, stmt, "model", name, lock=for_update)


def get_version(session: Session, model: Model, v: VersionRef | str) -> ModelVersion:
    number = version_number(model, v, "model")
    stmt = select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
    return one_or_404(session, stmt, "version", f"{number} of model {model.name}")


def publish_version(
    session: Session,
    model: Model,
    *,
    sha256: str,
    size_bytes: int,
    storage_key: str,
    parent_version: int | None = None,
    created_by_job: str | None = None,
    eval_set_sha256: str | None = None,
    eval_set_key: str | None = None,
    eval_set_samples: int | None = None,
    metrics: dict[str, Any] | None = None,
    description: str | None = None,
    status: str = "ready",
    dataset_version_id: str | None = None,
    recipe: dict[str, Any] | None = None,
) -> ModelVersion:
    """Add version latest+1 in the caller's transaction and make it the model's latest.

    The (model_id, version) unique constraint turns a concurrent publish into a 409 instead of
    two versions with the same number.
    """
    number = (model.latest_version or 0) + 1
    version = ModelVersion(
        model_id=model.id,
        version=number,
        sha256=sha256,
        size_bytes=size_bytes,
        storage_key=storage_key,
        status=status,
        parent_version=parent_version,
        created_by_job=created_by_job,
        description=description,
        eval_set_sha256=eval_set_sha256,
        eval_set_key=eval_set_key,
        eval_set_samples=eval_set_samples,
        metrics=metrics,
        dataset_version_id=dataset_version_id,
        recipe=recipe,
    )
    try:
        with session.begin_nested():
            session.add(version)
            session.flush()
    except IntegrityError as exc:
        raise conflict(f"version {number} of model {model.name} was published concurrently; retry") from exc
    model.latest_version = number
    session.flush()
    return version


def build_model_for(model: Model) -> nn.Module:
    """A freshly initialised module of the model's architecture (raises ArchitectureError → 422)."""
    return build_model(model.architecture)


def check_architecture(task: str, architecture: dict[str, Any]) -> dict[str, Any]:
    """Validate an architecture spec by building it on the meta device; returns the normalised
    spec ({"name", "config"} with defaults filled in)."""
    module = build_model(architecture, device="meta")
    spec = cast(ModelSpec, module.spec)  # every built model carries its spec
    if spec.task != task:
        raise Problem(
            422,
            "Unprocessable Content",
            f"architecture {spec.name!r} is a {spec.task} architecture, but the model's task is {task!r}",
        )
    return {"name": spec.name, "config": dict(spec.config)}


# ---------------------------------------------------------------------------------------------
# Use cases behind the routes


def model_out(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "task": model.task,
        "architecture": model.architecture,
        "description": model.description,
        "tags": list(model.tags or []),
        "latest_version": model.latest_version,
        "exactness": model.exactness,
        "created_at": model.created_at,
        "updated_at": model.updated_at,
    }


class TrainingLinkLike(Protocol):
    """service.registry.lineage.TrainingLink (which imports this module, so not imported here)."""

    @property
    def dataset_version_id(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def recipe(self) -> dict[str, Any] | None: ...


def version_out(version: ModelVersion, training_data: dict[str, Any] | None = None) -> dict[str, Any]:
    eval_set = (
        {"sha256": version.eval_set_sha256, "n_samples": version.eval_set_samples}
        if version.eval_set_sha256
        else None
    )
    return {
        "version": version.version,
        "sha256": version.sha256,
        "size_bytes": version.size_bytes,
        "parent_version": version.parent_version,
        "created_by_job": version.created_by_job,
        "status": version.status,
        "description": version.description,
        "eval_set": eval_set,
        "metrics": version.metrics,
        "training_data": training_data,
        "recipe": version.recipe,
        "retired_at": version.retired_at,
        "retired_reason": version.retired_reason,
        "created_at": version.created_at,
    }


def create_model(
    session: Session,
    *,
    tenant_id: str,
    actor: str,
    name: str,
    task: str,
    architecture: dict[str, Any],
    description: str | None,
    tags: list[str],
    hf_config_dirs: Sequence[Path] = (),
) -> Model:
    # The name first: building a large HF config takes seconds, a taken name is known at once.
    exists = session.scalars(select(Model.id).where(Model.tenant_id == tenant_id, Model.name == name)).first()
    if exists is not None:
        raise conflict(f"model {name!r} already exists")
    # End that read before the build: on SQLite every transaction holds the write lock, which
    # workers need for their heartbeats. A create racing this one still gets its 409 below.
    session.commit()
    normalised = check_architecture(task, inline_hf_config(architecture, hf_config_dirs))
    model = Model(
        tenant_id=tenant_id,
        name=name,
        task=task,
        architecture=normalised,
        description=description,
        tags=list(dict.fromkeys(tags)),
    )
    try:
        with session.begin_nested():
            session.add(model)
            session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        raise conflict(f"model {name!r} already exists") from exc
    append_event(
        session,
        actor=actor,
        action="model.created",
        tenant_id=tenant_id,
        model=name,
        object_id=model.id,
        payload={"task": task, "architecture": normalised},
    )
    return model


def upload_version(
    session: Session,
    ctx: ServiceContext,
    *,
    tenant_id: str,
    actor: str,
    model_name: str,
    checkpoint: bytes,
    eval_set: bytes | None,
    description: str | None,
    training: TrainingLinkLike | None = None,
) -> ModelVersion:
    """Validate everything first, store second, publish last: a refused upload leaves no trace."""
    # Read in a transaction of its own and validate outside any: on SQLite every transaction
    # holds the database's write lock (BEGIN IMMEDIATE), which workers need for their heartbeats.
    with session_scope(ctx.session_factory) as read:
        architecture = dict(get_model(read, tenant_id, model_name).architecture)
    storage = ctx.storage
    _state, sha = validate_checkpoint(architecture, checkpoint)

    eval_sha: str | None = None
    n_eval: int | None = None
    if eval_set is not None:
        data = validate_dataset(eval_set, architecture, max_bytes=ctx.settings.max_body_bytes)
        eval_sha = sha256_bytes(eval_set)
        n_eval = num_samples(data)

    stored = storage.put_bytes(checkpoint, kind="checkpoints")
    assert stored.sha256 == sha
    eval_key = storage.put_bytes(eval_set, kind="eval-sets").key if eval_set is not None else None

    # Lock the model row so concurrent uploads get consecutive version numbers. Should the model
    # have gone meanwhile (404), the stored blobs are content-addressed and so harmless.
    model = get_model(session, tenant_id, model_name, for_update=True)

    version = publish_version(
        session,
        model,
        sha256=sha,
        size_bytes=stored.size,
        storage_key=stored.key,
        eval_set_sha256=eval_sha,
        eval_set_key=eval_key,
        eval_set_samples=n_eval,
        description=description,
        dataset_version_id=training.dataset_version_id if training else None,
        recipe=training.recipe if training else None,
    )
    append_event(
        session,
        actor=actor,
        action="version.created",
        tenant_id=tenant_id,
        model=model.name,
        object_id=version.id,
        payload={
            "version": version.version,
            "sha256": sha,
            "size_bytes": stored.size,
            "parent_version": None,
            "eval_set_sha256": eval_sha,
            "training_data": {"dataset": training.dataset, "version": training.version} if training else None,
            "recipe": training.recipe if training else None,
        },
    )
    return version
