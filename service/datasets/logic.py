"""Data set use cases behind the routes, and the one import point of the library functions the
erasure jobs call (``find_samples``, ``read_samples``, ``iter_retain_batches``, ``retain_sample``,
``erase_samples``, ``erase_for_lineage``, ``purge_version``, ``delete_unreferenced_shards``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets import index
from service.datasets.erasure import delete_unreferenced_shards as delete_unreferenced_shards
from service.datasets.erasure import erase_for_lineage as erase_for_lineage
from service.datasets.erasure import erase_samples as erase_samples
from service.datasets.erasure import purge_version as purge_version
from service.datasets.ingest import prepare_upload
from service.datasets.reading import iter_retain_batches as iter_retain_batches
from service.datasets.reading import read_samples as read_samples
from service.datasets.reading import retain_sample as retain_sample
from service.datasets.records import add_version, get_dataset
from service.datasets.selection import SampleSelection as SampleSelection
from service.datasets.selection import find_samples as find_samples
from service.datasets.shards import data_sha256
from service.datasets.states import DatasetTask, VersionSource, VersionStatus
from service.datasets.subjects import SubjectHasher
from service.db import session_scope
from service.errors import conflict
from service.tables import Dataset, DatasetShard, DatasetVersion


def dataset_out(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "task": dataset.task,
        "description": dataset.description,
        "latest_version": dataset.latest_version,
        "created_at": dataset.created_at,
        "updated_at": dataset.updated_at,
    }


def version_out(version: DatasetVersion) -> dict[str, Any]:
    upload = (
        {"format": version.upload_format, "sha256": version.upload_sha256}
        if version.upload_format and version.upload_sha256
        else None
    )
    erasure = (
        {
            "erased_samples": version.erased_samples,
            "shards_rewritten": version.shards_rewritten or 0,
            "bytes_rewritten": version.bytes_rewritten or 0,
        }
        if version.erased_samples is not None
        else None
    )
    return {
        "version": version.version,
        "status": version.status,
        "source": version.source,
        "parent_version": version.parent_version,
        "n_samples": version.n_samples,
        "n_shards": version.n_shards,
        "shard_samples": version.shard_samples,
        "size_bytes": version.size_bytes,
        "data_sha256": version.data_sha256,
        "columns": version.columns,
        "sample_id_type": version.sample_id_kind,
        "has_subjects": version.subject_key_id is not None,
        "n_subjects": version.n_subjects,
        "upload": upload,
        "erasure": erasure,
        "description": version.description,
        "created_at": version.created_at,
        "retired_at": version.retired_at,
    }


def create_dataset(
    session: Session, *, tenant_id: str, actor: str, name: str, task: DatasetTask, description: str | None
) -> Dataset:
    dataset = Dataset(tenant_id=tenant_id, name=name, task=task, description=description)
    try:
        with session.begin_nested():
            session.add(dataset)
            session.flush()
    except IntegrityError as exc:  # the name is taken (or a concurrent create won the race)
        raise conflict(f"dataset {name!r} already exists") from exc
    append_event(
        session,
        actor=actor,
        action="dataset.created",
        tenant_id=tenant_id,
        object_id=dataset.id,
        payload={"dataset": name, "task": str(task)},
    )
    return dataset


def upload_version(
    session: Session,
    ctx: ServiceContext,
    *,
    tenant_id: str,
    actor: str,
    dataset_name: str,
    data: bytes,
    description: str | None,
) -> DatasetVersion:
    """Validate everything first, store the shards second, index and publish last: a refused
    upload leaves no row and no blob."""
    # Read in a transaction of its own and validate outside any: on SQLite every transaction
    # holds the database's write lock, which workers need for their heartbeats.
    with session_scope(ctx.session_factory) as read:
        task = DatasetTask(get_dataset(read, tenant_id, dataset_name).task)
    hasher = SubjectHasher(ctx, tenant_id)
    prepared = prepare_upload(ctx, task, data)

    # Lock the data set row so concurrent uploads get consecutive version numbers. Should it
    # have gone meanwhile (404), the stored shards are content-addressed and so harmless.
    dataset = get_dataset(session, tenant_id, dataset_name, for_update=True)
    version = add_version(
        session,
        dataset,
        DatasetVersion(
            status=VersionStatus.READY,
            source=VersionSource.UPLOAD,
            n_samples=prepared.n_samples,
            n_shards=len(prepared.shards),
            shard_samples=prepared.shard_samples,
            size_bytes=sum(s.size_bytes for s in prepared.shards),
            data_sha256=data_sha256(prepared.shards),
            columns=prepared.columns,
            sample_id_kind=prepared.sample_id_kind,
            n_subjects=prepared.n_subjects,
            subject_key_id=hasher.key_id if prepared.subjects is not None else None,
            upload_format=prepared.format,
            upload_sha256=prepared.upload_sha256,
            description=description,
            created_by=actor,
        ),
    )
    session.execute(
        insert(DatasetShard),
        [
            {
                "dataset_version_id": version.id,
                "shard": s.shard,
                "storage_key": s.key,
                "sha256": s.sha256,
                "size_bytes": s.size_bytes,
                "n_samples": s.n_samples,
            }
            for s in prepared.shards
        ],
    )
    index.insert_rows(session, version.id, prepared.index_rows(hasher))
    append_event(
        session,
        actor=actor,
        action="dataset.version_created",
        tenant_id=tenant_id,
        object_id=version.id,
        payload={
            "dataset": dataset.name,
            "version": version.version,
            "n_samples": version.n_samples,
            "n_shards": version.n_shards,
            "data_sha256": version.data_sha256,
            "upload_sha256": version.upload_sha256,
        },
    )
    return version
