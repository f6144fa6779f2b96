"""Deletion requests by reference: a subject or sample ids of the model's registered training set.

The samples are found through the model's latest version's link to its dataset version
(service/registry/lineage.py) and read from the dataset's shards, so the owner never uploads them.
A request for samples that were already erased from this model completes at once as a no-op: the
model's own history of completed requests says so (by subject, sample ids or sample digests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets.logic import SampleSelection, find_samples
from service.datasets.records import get_version_by_id
from service.errors import Problem, unprocessable
from service.jobs.states import RequestStatus
from service.tables import DeletionRequest, Model, ModelVersion


@dataclass(frozen=True)
class Reference:
    """What a by-reference request names: a subject, sample ids, or both."""

    subject: str | None = None
    sample_ids: tuple[str | int, ...] | None = None


@dataclass(frozen=True)
class Found:
    dataset_id: str
    dataset_version_id: str
    selection: SampleSelection


def find_in_training_set(
    session: Session, ctx: ServiceContext, tenant_id: str, model: Model, latest: ModelVersion, ref: Reference
) -> Found:
    """The samples ``ref`` names in the data the model's latest version reflects.

    404 for an unknown subject, 422 for sample ids that are not there (``missing_sample_ids``),
    422 if the model names no registered training set."""
    if latest.dataset_version_id is None:
        raise unprocessable(
            f"version {latest.version} of model {model.name} names no registered training set, so "
            "samples cannot be found by subject or id: upload the samples, or register the training "
            "set and name it when uploading the version",
            error="NoTrainingData",
        )
    dataset, version = get_version_by_id(session, latest.dataset_version_id)
    selection = find_samples(
        session,
        ctx,
        tenant_id,
        dataset.name,
        subject=ref.subject,
        sample_ids=list(ref.sample_ids) if ref.sample_ids is not None else None,
        version=version.version,
    )
    return Found(dataset.id, version.id, selection)


def already_erased(session: Session, model: Model, ref: Reference | None, digests: Sequence[str]) -> bool:
    """Whether every sample named was erased from this model by a request that completed."""
    done = select(DeletionRequest).where(
        DeletionRequest.model_id == model.id, DeletionRequest.status == RequestStatus.COMPLETED
    )
    if ref is not None and ref.subject is not None and ref.sample_ids is None:
        return session.scalar(done.where(DeletionRequest.subject == ref.subject).limit(1)) is not None
    rows = list(session.scalars(done))
    if ref is not None and ref.sample_ids is not None:
        erased = {str(i) for r in rows for i in (r.sample_ids or [])}
        return bool(ref.sample_ids) and {str(i) for i in ref.sample_ids} <= erased
    erased_digests = {d for r in rows for d in (r.sample_digests or [])}
    return bool(digests) and set(digests) <= erased_digests


def not_in_training_set(exc: Problem) -> bool:
    """A lookup failed because the samples are not (or no longer) in the data: a 404 or 422."""
    return exc.status in (404, 422) and exc.extra.get("error") != "NoTrainingData"
