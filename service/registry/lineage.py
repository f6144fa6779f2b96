"""Lineage from data to models: the training set a version was trained on, and its recipe.

A model version may name a registered dataset version (service/datasets) and the recipe it was
trained with. That link is what lets an erasure by subject find every model holding the subject's
samples, lets retain-aware methods run (the retain set is the linked data minus the forget set),
and lets the engine's trainer retrain the version exactly (the recipe is ``retrain``'s params).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets.records import get_dataset, get_version
from service.datasets.states import DatasetTask, VersionStatus
from service.db import session_scope
from service.errors import conflict, unprocessable
from service.tables import Dataset, DatasetVersion, ModelVersion
from unlearning.methods.retrain import RetrainParams

# A dataset of this task trains models of that task.
MODEL_TASK_FOR = {DatasetTask.CLASSIFICATION: "classification", DatasetTask.LANGUAGE_MODELING: "causal-lm"}


class TrainingRecipe(RetrainParams):
    """How a version was trained: the engine's ``retrain`` params plus the seed."""

    seed: int = Field(0, ge=0, le=2**31 - 1)

    def retrain_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"seed"})


@dataclass(frozen=True)
class TrainingLink:
    dataset_version_id: str
    dataset: str
    version: int
    recipe: dict[str, Any] | None


def parse_recipe(raw: dict[str, Any] | None) -> TrainingRecipe | None:
    if raw is None:
        return None
    try:
        return TrainingRecipe.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise unprocessable(
            f"recipe.{where}: {first['msg']}" if where else f"recipe: {first['msg']}"
        ) from exc


def resolve_link(
    ctx: ServiceContext,
    tenant_id: str,
    model_task: str,
    dataset: str | None,
    version: str | None,
    recipe: dict[str, Any] | None,
) -> TrainingLink | None:
    """The dataset version an upload names (404 if not the tenant's, 409 if retired, 422 if its
    task does not fit the model's), with the recipe checked; None if the upload names none."""
    if dataset is None:
        if version is not None or recipe is not None:
            raise unprocessable("dataset_version and recipe need dataset (the training set's name)")
        return None
    parsed = parse_recipe(recipe)
    with session_scope(ctx.session_factory) as read:
        ds = get_dataset(read, tenant_id, dataset)
        dv = get_version(read, ds, version)
        if dv.status != VersionStatus.READY:
            raise conflict(
                f"dataset {dataset} version {dv.version} is {dv.status}: its samples were erased; "
                "name the newest version",
                latest_version=ds.latest_version,
            )
        if MODEL_TASK_FOR[DatasetTask(ds.task)] != model_task:
            raise unprocessable(f"dataset {dataset} is a {ds.task} dataset; the model's task is {model_task}")
        return TrainingLink(
            dv.id, ds.name, dv.version, parsed.model_dump(mode="json") if parsed is not None else None
        )


def training_data(session: Session, version: ModelVersion) -> dict[str, Any] | None:
    """``{"dataset", "version"}`` of the version's training set, for answers (None: unregistered)."""
    if version.dataset_version_id is None:
        return None
    row = session.execute(
        select(Dataset.name, DatasetVersion.version)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(DatasetVersion.id == version.dataset_version_id)
    ).one()
    return {"dataset": row[0], "version": row[1]}
