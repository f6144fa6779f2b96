"""What a publishing job does to the model's registered training set, and the data's end of life.

When a job that erased samples by reference publishes, the samples leave the dataset as a new
dataset version (only the shards that held them are rewritten), and the new model version links
that version. Several models trained on one dataset each erase the same samples: the first job
to publish writes the new dataset version, the others find the samples gone from the latest
version and link it. A dataset version that an erasure replaced is purged (index and shard rows,
then the blobs no version lists) once no ready model version links it any more.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets import index
from service.datasets.logic import delete_unreferenced_shards, erase_samples, purge_version
from service.datasets.records import get_dataset, get_version, get_version_by_id
from service.datasets.states import VersionStatus as DatasetVersionStatus
from service.db import db_time, session_scope, utcnow
from service.registry.retirement import VersionStatus
from service.tables import DatasetVersion, ModelVersion
from service.unit_of_work import call_after_commit

log = structlog.get_logger("service.jobs.training_data")


def erase_from_training_set(
    session: Session, ctx: ServiceContext, linked_version_id: str, sample_ids: list[str], actor: str
) -> str:
    """The id of the dataset's newest version, made to lack ``sample_ids`` (in the caller's
    transaction, with the dataset row locked so two publishing jobs erase once)."""
    dataset, _linked = get_version_by_id(session, linked_version_id)
    locked = get_dataset(session, dataset.tenant_id, dataset.name, for_update=True)
    latest = get_version(session, locked, "latest")
    present = list(index.positions(session, latest.id, sample_ids))
    if not present:
        return latest.id  # another model's job already erased them
    return erase_samples(session, ctx, latest.id, present, actor).id


def purge_replaced_data(ctx: ServiceContext, grace_seconds: float) -> int:
    """Purge dataset versions an erasure replaced that no ready model version links any more;
    their blobs go after the commit. Returns how many versions were purged."""
    cutoff = db_time(utcnow() - timedelta(seconds=grace_seconds))
    with session_scope(ctx.session_factory) as s:
        linked = select(ModelVersion.dataset_version_id).where(
            ModelVersion.status == VersionStatus.READY, ModelVersion.dataset_version_id.is_not(None)
        )
        due = list(
            s.scalars(
                select(DatasetVersion.id)
                .where(
                    DatasetVersion.status == DatasetVersionStatus.RETIRED,
                    DatasetVersion.retired_at <= cutoff,
                    DatasetVersion.id.not_in(linked),
                )
                .limit(100)
            )
        )
        keys: list[str] = []
        for version_id in due:
            keys.extend(purge_version(s, version_id, "system:reconciler"))
        if keys:
            call_after_commit(s, lambda: _delete(ctx, keys))
    if due:
        log.info("dataset_versions_purged", count=len(due))
    return len(due)


def _delete(ctx: ServiceContext, keys: list[str]) -> None:
    deleted = delete_unreferenced_shards(ctx, keys)
    log.info("dataset_shards_deleted", count=len(deleted))
