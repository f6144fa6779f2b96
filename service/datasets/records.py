"""Finding and numbering data sets and their versions (tenant-scoped: another tenant's is a 404)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Problem, conflict, not_found
from service.lookup import VersionRef, one_or_404, version_number
from service.tables import Dataset, DatasetShard, DatasetVersion


def get_dataset(session: Session, tenant_id: str, name: str, *, for_update: bool = False) -> Dataset:
    """The tenant's data set by name; another tenant's is indistinguishable from a missing one."""
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.name == name)
    return one_or_404(session, stmt, "dataset", name, lock=for_update)


def get_version(session: Session, dataset: Dataset, ref: VersionRef | str | None = None) -> DatasetVersion:
    """Version ``ref`` (a number, "latest", or None for latest) of a data set, or a 404."""
    number = version_number(dataset, "latest" if ref is None else ref, "dataset")
    stmt = select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == number
    )
    return one_or_404(session, stmt, "version", f"{number} of dataset {dataset.name}")


def get_version_by_id(session: Session, dataset_version_id: str) -> tuple[Dataset, DatasetVersion]:
    """A version by its id (as find_samples returns it) and its data set."""
    row = session.execute(
        select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(DatasetVersion.id == dataset_version_id)
    ).one_or_none()
    if row is None:
        raise not_found("dataset version", dataset_version_id)
    return row[0], row[1]


def add_version(
    session: Session, dataset: Dataset, version: DatasetVersion, *, latest: bool = True
) -> DatasetVersion:
    """Number ``version`` after the data set's highest and, unless ``latest`` is False, make it
    the data set's latest, in the caller's transaction.

    ``latest=False`` is for a version made for one model's lineage (service/jobs/training_data.py):
    numbered like any other, but the data set's latest stays where it is, so the highest number
    is not always the latest. Call it with the data set row locked (``get_dataset(...,
    for_update=True)``); the (dataset_id, version) unique constraint still turns a concurrent
    publish into a 409.
    """
    highest = session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    )
    version.dataset_id = dataset.id
    version.version = max(highest or 0, dataset.latest_version or 0) + 1
    try:
        with session.begin_nested():
            session.add(version)
            session.flush()
    except IntegrityError as exc:
        raise conflict(
            f"version {version.version} of dataset {dataset.name} was published concurrently; retry"
        ) from exc
    if latest:
        dataset.latest_version = version.version
    session.flush()
    return version


def shards_of(session: Session, dataset_version_id: str) -> list[DatasetShard]:
    """A version's shards in shard order."""
    return list(
        session.scalars(
            select(DatasetShard)
            .where(DatasetShard.dataset_version_id == dataset_version_id)
            .order_by(DatasetShard.shard)
        )
    )


def gone(what: str) -> Problem:
    return Problem(410, "Gone", what)
