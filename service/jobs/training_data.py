"""What a publishing job does to the model's registered training set, and the data's end of life.

When a job that erased samples by reference publishes, two things happen in its transaction:

- the samples leave the dataset: if the dataset's latest version holds any of them, a new latest
  version without them is made (only the shards that held them are rewritten), so no later
  training or upload links them. Several models' jobs for one erasure each erase the same
  samples: the first to publish writes that version, the others find the samples gone;
- the new model version links its own lineage: the dataset version its base version was trained
  on, minus the samples this job erased, and nothing else. For a model trained on the latest
  version that is the new latest version. For a model trained on an older version (another
  model's request erased other samples from the dataset since) it is a version of its own,
  reused if one with exactly that content exists (service/datasets/erasure.py,
  ``erase_for_lineage``), so that a model's link never claims it forgot samples it was never
  asked to forget.

A dataset version that an erasure replaced (and a lineage version made from one) is retired;
it is purged (index and shard rows, then the blobs no version lists) once no ready model version
links it any more, so a shard is deleted only once no ready model version is trained on a
version holding it.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets import index
from service.datasets.logic import delete_unreferenced_shards, erase_for_lineage, erase_samples, purge_version
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
    """The id of the dataset version the job's new model version links: ``linked_version_id``
    (its base version's) without ``sample_ids``. The dataset's latest version is made to lack
    them too. In the caller's transaction, with the dataset row locked so that two publishing
    jobs erase once and number versions in turn."""
    dataset, _linked = get_version_by_id(session, linked_version_id)
    locked = get_dataset(session, dataset.tenant_id, dataset.name, for_update=True)
    latest = get_version(session, locked, "latest")
    present = list(index.positions(session, latest.id, sample_ids))
    newest = erase_samples(session, ctx, latest.id, present, actor) if present else latest
    if linked_version_id == latest.id:
        return newest.id  # trained on the latest version: its successor is this model's lineage
    return erase_for_lineage(session, ctx, linked_version_id, sample_ids, actor).id


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
