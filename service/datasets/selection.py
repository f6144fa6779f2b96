"""Which samples of which dataset version an erasure is about: by subject, by sample id, or both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets import index
from service.datasets.ids import SampleId, from_text, not_held, to_texts
from service.datasets.records import get_dataset, get_version, gone
from service.datasets.states import VersionStatus
from service.datasets.subjects import SubjectHasher, SubjectId
from service.errors import Problem, not_found, unprocessable
from service.lookup import VersionRef
from service.tables import DatasetShard, DatasetVersion

# How many unknown ids a 422 names (all of them are counted).


@dataclass(frozen=True)
class SampleSelection:
    """Samples of one dataset version, in dataset order (shard, then row), and where they lie."""

    dataset_id: str
    dataset_name: str
    dataset_version_id: str
    version: int
    sample_ids: tuple[SampleId, ...]  # ints if the version's ids are integers, else strings
    shards: tuple[int, ...]  # shard numbers holding them, ascending
    shard_keys: tuple[str, ...]  # their blobs' storage keys, in the same order

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)


def subject_mismatch() -> Problem:
    return Problem(
        500,
        "Internal Server Error",
        "the subject index of this dataset version was written under another service secret; "
        "every API and worker process must share UNLEARN_SECRET_KEY",
    )


def _subject_positions(
    session: Session,
    ctx: ServiceContext,
    tenant_id: str,
    version: DatasetVersion,
    dataset: str,
    subject: SubjectId,
) -> dict[str, tuple[int, int]]:
    if version.subject_key_id is None:
        raise not_found("subject", f"in dataset {dataset} version {version.version} (it has no subject ids)")
    hasher = SubjectHasher(ctx, tenant_id)
    if hasher.key_id != version.subject_key_id:
        raise subject_mismatch()
    rows = index.subject_rows(session, version.id, hasher(subject))
    if not rows:
        # The subject is not echoed: problem details end up in logs.
        raise not_found("subject", f"in dataset {dataset} version {version.version}")
    return {r.sample_id: (r.shard, r.shard_row) for r in rows}


def id_positions(
    session: Session,
    version: DatasetVersion,
    sample_ids: Sequence[SampleId],
    *,
    empty: str = "sample_ids is empty",
    of: str = "this dataset",
) -> dict[str, tuple[int, int]]:
    """Where each id (as index text) lies in ``version``: 422 ``empty`` for no ids, and a 422
    listing the ids it does not hold (:func:`~service.datasets.ids.not_held`)."""
    texts = to_texts(version.sample_id_kind, sample_ids)
    if not texts:
        raise unprocessable(empty)
    found = index.positions(session, version.id, texts)
    missing = [t for t in texts if t not in found]
    if missing:
        raise not_held(version.sample_id_kind, missing, version.version, of)
    return found


def find_samples(
    session: Session,
    ctx: ServiceContext,
    tenant_id: str,
    dataset_name: str,
    *,
    subject: SubjectId | None = None,
    sample_ids: Sequence[SampleId] | None = None,
    version: VersionRef | str | None = None,
) -> SampleSelection:
    """The samples of a subject and/or with the given ids in one version of a tenant's dataset.

    ``version``: a number, "latest" or None (latest). ``subject`` is matched through its keyed
    digest (``ctx`` holds the key); giving both ``subject`` and ``sample_ids`` selects the union.
    Raises problem details: 404 for an unknown dataset or version, another tenant's dataset, or a
    subject with no sample in the version; 422 listing the sample ids the version does not hold
    (``missing_sample_ids``, ``n_missing``) or when neither is given; 410 for a purged version.
    Reads only the index, never a shard.
    """
    if subject is None and sample_ids is None:
        raise unprocessable("give a subject or sample ids to find")
    dataset = get_dataset(session, tenant_id, dataset_name)
    found_version = get_version(session, dataset, version)
    if found_version.status == VersionStatus.PURGED:
        raise gone(f"version {found_version.version} of dataset {dataset.name} was purged after an erasure")
    found: dict[str, tuple[int, int]] = {}
    if subject is not None:
        found.update(_subject_positions(session, ctx, tenant_id, found_version, dataset.name, subject))
    if sample_ids is not None:
        found.update(id_positions(session, found_version, sample_ids))
    ordered = sorted(found.items(), key=lambda item: item[1])
    shard_numbers = sorted({pos[0] for _, pos in ordered})
    stmt = select(DatasetShard.shard, DatasetShard.storage_key).where(
        DatasetShard.dataset_version_id == found_version.id, DatasetShard.shard.in_(shard_numbers)
    )
    keys = {shard: key for shard, key in session.execute(stmt)}
    return SampleSelection(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        dataset_version_id=found_version.id,
        version=found_version.version,
        sample_ids=tuple(from_text(found_version.sample_id_kind, sid) for sid, _ in ordered),
        shards=tuple(shard_numbers),
        shard_keys=tuple(keys[s] for s in shard_numbers),
    )
