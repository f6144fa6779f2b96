"""Erasing samples from a dataset: a new version without them, then retiring and purging the old.

The life of erased data: ``erase_samples`` makes version n+1 without the samples (rewriting only
the shards that held them) and retires the source version; ``purge_version`` (after whatever
grace period the caller keeps) drops the retired version's index and shard rows; and
``delete_unreferenced_shards`` deletes the blobs no version lists any more. The caller commits
between the steps and decides when each runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog
import torch
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets import index, shards
from service.datasets.ids import SampleId, to_texts
from service.datasets.records import add_version, get_version_by_id, shards_of
from service.datasets.selection import id_positions
from service.datasets.states import VersionSource, VersionStatus
from service.db import session_scope, utcnow
from service.errors import conflict
from service.privacy import keyed_digests
from service.tables import Dataset, DatasetShard, DatasetVersion
from unlearning.data import sample_digests
from unlearning.samples import take

log = structlog.get_logger("service.datasets.erasure")

_LOOKUP_BATCH = 500


def _not_ready(dataset: Dataset, version: DatasetVersion) -> Exception:
    return conflict(
        f"version {version.version} of dataset {dataset.name} is {version.status}: an erasure already "
        f"replaced it (latest is {dataset.latest_version}); find the samples again in a ready version",
        version_status=version.status,
        latest_version=dataset.latest_version,
    )


def _shard_rows(stored: Iterable[shards.StoredShard], dataset_version_id: str) -> list[dict[str, object]]:
    return [
        {
            "dataset_version_id": dataset_version_id,
            "shard": s.shard,
            "storage_key": s.key,
            "sha256": s.sha256,
            "size_bytes": s.size_bytes,
            "n_samples": s.n_samples,
        }
        for s in stored
    ]


@dataclass(frozen=True)
class _Plan:
    """What an erasure touches, read from the index before any shard is."""

    tenant_id: str
    dataset_id: str
    n_erased: int
    erased: dict[int, list[int]]  # shard -> rows erased from it
    old_shards: dict[int, shards.StoredShard]
    affected_rows: list[index.IndexRow]  # every index row of the shards in ``erased``


def _usable(source: DatasetVersion, lineage: bool) -> bool:
    """A version samples can be erased from: a ready one, or, for a model's lineage, a retired one
    (a model still trained on it links it, so it is not purged)."""
    return source.status == VersionStatus.READY or (lineage and source.status == VersionStatus.RETIRED)


def _plan(
    session: Session, dataset_version_id: str, sample_ids: Sequence[SampleId], *, lineage: bool = False
) -> _Plan:
    dataset, source = get_version_by_id(session, dataset_version_id)
    if not _usable(source, lineage):
        raise _not_ready(dataset, source)
    found = id_positions(
        session, source, sample_ids, empty="no sample ids to erase", of=f"dataset {dataset.name}"
    )
    erased = index.rows_by_shard(found.values())
    return _Plan(
        tenant_id=dataset.tenant_id,
        dataset_id=dataset.id,
        n_erased=len(found),
        erased=erased,
        old_shards={
            s.shard: shards.StoredShard(s.shard, s.storage_key, s.sha256, s.size_bytes, s.n_samples)
            for s in shards_of(session, source.id)
        },
        affected_rows=index.rows_in_shards(session, source.id, erased.keys()),
    )


@dataclass(frozen=True)
class _Rewrite:
    rewritten: list[shards.StoredShard]  # the affected shards without the erased rows (none if emptied)
    index_rows: list[index.IndexRow]  # the rows of the samples those shards keep
    digests: list[str]  # the erased samples' content digests (unlearning.data.sample_digests)


def _rewrite(ctx: ServiceContext, plan: _Plan) -> _Rewrite:
    rewritten: list[shards.StoredShard] = []
    index_rows: list[index.IndexRow] = []
    digests: list[str] = []
    for shard, rows in plan.erased.items():
        old = plan.old_shards[shard]
        data = shards.load(ctx.storage, old.key)
        digests.extend(sample_digests(take(data, rows)))
        keep = torch.ones(old.n_samples, dtype=torch.bool)
        keep[rows] = False
        if bool(keep.any()):  # a shard left empty is dropped, not stored
            rewritten.append(shards.put(ctx.storage, shard, take(data, keep)))
        erased_rows = set(rows)
        survivors = [r for r in plan.affected_rows if r.shard == shard and r.shard_row not in erased_rows]
        # take() keeps the survivors' order, so the j-th survivor is row j of the new shard.
        index_rows.extend(
            index.IndexRow(r.sample_id, r.subject_digest, shard, j) for j, r in enumerate(survivors)
        )
    return _Rewrite(rewritten, index_rows, digests)


def erase_samples(
    session: Session,
    ctx: ServiceContext,
    dataset_version_id: str,
    sample_ids: Sequence[SampleId],
    actor: str,
) -> DatasetVersion:
    """A new version of the dataset without ``sample_ids``, recorded in the caller's transaction.

    Only the shards holding erased samples are read and written again; every other shard is
    reused by its key. The index rows of the kept samples are copied (inside the database), the
    source version is marked retired (its data stays readable until ``purge_version``), the new
    version becomes the dataset's latest, and a ``dataset.samples_erased`` audit event records
    the erased samples' keyed content digests (the same digests an unlearning job records).
    The returned version reports the work: ``erased_samples``, ``shards_rewritten`` and
    ``bytes_rewritten``; ``parent_version`` is the source's number. The caller commits.

    Raises problem details: 422 for no ids or ids the version does not hold
    (``missing_sample_ids``); 409 if the source version is no longer ready (an erasure already
    replaced it, even concurrently); 404 for an unknown version id.

    Transactions: if ``session`` has no transaction open yet, the index is read in a short one
    of its own and shards are rewritten before ``session`` is touched (on SQLite a transaction
    holds the database's write lock, which workers need for heartbeats); if it has one open, that
    one is used throughout (a second would wait on it). Should the caller roll back, the written
    shards are unreferenced content-addressed blobs: harmless, reused by an identical write.
    """
    return _erase(session, ctx, dataset_version_id, sample_ids, actor, lineage=False)


def erase_for_lineage(
    session: Session,
    ctx: ServiceContext,
    dataset_version_id: str,
    sample_ids: Sequence[SampleId],
    actor: str,
) -> DatasetVersion:
    """The version of the dataset whose samples are exactly those of ``dataset_version_id``
    without ``sample_ids`` (those it does not hold are ignored), for one model's lineage; in the
    caller's transaction, which holds the dataset row locked (the publishing job's).

    Unlike :func:`erase_samples` the source may be retired (an erasure elsewhere replaced it; a
    model still trained on it links it) and the result does not become the dataset's latest: it
    is what one model was trained on minus what that model forgot. An existing version with
    exactly that content (the same shards and index) is returned as it is; otherwise a new one is
    made the way :func:`erase_samples` makes one (only the shards holding the samples written,
    every other reused by its key), retired from the start if its source was retired, since it
    then holds data erased from the dataset, and purged like any retired version once no ready
    model version links it. A ready source is retired as :func:`erase_samples` retires one.
    Returns the source itself if it holds none of ``sample_ids``.
    """
    _dataset, source = get_version_by_id(session, dataset_version_id)
    texts = to_texts(source.sample_id_kind, sample_ids, strict=False)
    present = list(index.positions(session, dataset_version_id, texts))
    if not present:
        return source
    return _erase(session, ctx, dataset_version_id, present, actor, lineage=True)


def _erase(
    session: Session,
    ctx: ServiceContext,
    dataset_version_id: str,
    sample_ids: Sequence[SampleId],
    actor: str,
    *,
    lineage: bool,
) -> DatasetVersion:
    # 1. Plan from the index.
    if session.in_transaction():
        plan = _plan(session, dataset_version_id, sample_ids, lineage=lineage)
    else:
        with session_scope(ctx.session_factory) as read:
            plan = _plan(read, dataset_version_id, sample_ids, lineage=lineage)

    # 2. Rewrite the affected shards (storage only).
    work = _rewrite(ctx, plan)
    rewritten = work.rewritten
    reused = [s for s in plan.old_shards.values() if s.shard not in plan.erased]
    all_shards = sorted([*reused, *rewritten], key=lambda s: s.shard)
    tenant_id, dataset_id, n_erased = plan.tenant_id, plan.dataset_id, plan.n_erased

    # 3. Record, in the caller's transaction: the data set row is locked so that versions are
    # numbered in turn and two erasures of one source cannot both succeed.
    locked = session.scalars(
        select(Dataset)
        .where(Dataset.id == dataset_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    source = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.id == dataset_version_id)
        .execution_options(populate_existing=True)
    ).one()
    if not _usable(source, lineage):
        raise _not_ready(locked, source)
    data_digest = shards.data_sha256(all_shards)
    now = utcnow()
    if lineage:
        existing = _equal_version(session, source, plan, work, data_digest, source.n_samples - n_erased)
        if existing is not None:
            if source.status == VersionStatus.READY:
                source.status, source.retired_at = VersionStatus.RETIRED, now
                session.flush()
            return existing
    # A version made for a lineage from a retired source holds data erased from the dataset.
    retired = lineage and source.status == VersionStatus.RETIRED
    bytes_rewritten = sum(s.size_bytes for s in rewritten)
    version = add_version(
        session,
        locked,
        DatasetVersion(
            status=VersionStatus.RETIRED if retired else VersionStatus.READY,
            retired_at=now if retired else None,
            source=VersionSource.ERASURE,
            parent_version=source.version,
            n_samples=source.n_samples - n_erased,
            n_shards=len(all_shards),
            shard_samples=source.shard_samples,
            size_bytes=sum(s.size_bytes for s in all_shards),
            data_sha256=data_digest,
            columns=dict(source.columns),
            sample_id_kind=source.sample_id_kind,
            n_subjects=0,
            subject_key_id=source.subject_key_id,
            erased_samples=n_erased,
            shards_rewritten=len(rewritten),
            bytes_rewritten=bytes_rewritten,
            description=f"version {source.version} without {n_erased} erased sample(s)"
            + (" (one model's training data)" if lineage else ""),
            created_by=actor,
        ),
        latest=not lineage,
    )
    if all_shards:
        session.execute(insert(DatasetShard), _shard_rows(all_shards, version.id))
    index.copy_rows(session, source.id, version.id, skip_shards=plan.erased.keys())
    index.insert_rows(session, version.id, work.index_rows)
    if source.subject_key_id is not None:
        version.n_subjects = index.count_subjects(session, version.id)
    if source.status == VersionStatus.READY:
        source.status = VersionStatus.RETIRED
        source.retired_at = now
    append_event(
        session,
        actor=actor,
        action="dataset.samples_erased",
        tenant_id=tenant_id,
        object_id=version.id,
        payload={
            "dataset": locked.name,
            "from_version": source.version,
            "version": version.version,
            "latest": not lineage,
            "n_samples": n_erased,
            # Keyed per tenant, as everywhere outside the database (service/privacy.py).
            "sample_digests": keyed_digests(ctx.tenant_key(tenant_id), work.digests),
            "shards_rewritten": len(rewritten),
            "shards_reused": len(reused),
            "bytes_rewritten": bytes_rewritten,
            "data_sha256": version.data_sha256,
        },
    )
    session.flush()
    log.info(
        "dataset_samples_erased",
        dataset=locked.name,
        from_version=source.version,
        version=version.version,
        latest=not lineage,
        n_samples=n_erased,
        shards_rewritten=len(rewritten),
        bytes_rewritten=bytes_rewritten,
    )
    return version


def _equal_version(
    session: Session, source: DatasetVersion, plan: _Plan, work: _Rewrite, data_digest: str, n_samples: int
) -> DatasetVersion | None:
    """A version of the dataset, not purged, holding exactly the samples the rewrite would give
    (ready ones first, then the newest)."""
    candidates = session.scalars(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == source.dataset_id,
            DatasetVersion.data_sha256 == data_digest,
            DatasetVersion.n_samples == n_samples,
            DatasetVersion.status != VersionStatus.PURGED,
            DatasetVersion.id != source.id,
        )
    )
    for candidate in sorted(candidates, key=lambda v: (v.status != VersionStatus.READY, -v.version)):
        if index.equals_rewrite(session, candidate.id, source.id, plan.erased.keys(), work.index_rows):
            return candidate
    return None


def purge_version(session: Session, dataset_version_id: str, actor: str) -> list[str]:
    """Drop a retired version's index and shard rows, in the caller's transaction; returns the
    storage keys its shards had, for ``delete_unreferenced_shards`` once this commits.

    The version row stays (status ``purged``: its number, digests and lineage remain on record),
    but no query can find its samples or subjects any more. 409 unless the version is retired.
    """
    dataset, version = get_version_by_id(session, dataset_version_id)
    if version.status != VersionStatus.RETIRED:
        raise conflict(
            f"version {version.version} of dataset {dataset.name} is {version.status}; only a retired "
            "version (one an erasure replaced) can be purged",
            version_status=version.status,
        )
    keys = [s.storage_key for s in shards_of(session, version.id)]
    index.delete_rows(session, version.id)
    session.execute(delete(DatasetShard).where(DatasetShard.dataset_version_id == version.id))
    version.status = VersionStatus.PURGED
    append_event(
        session,
        actor=actor,
        action="dataset.version_purged",
        tenant_id=dataset.tenant_id,
        object_id=version.id,
        payload={"dataset": dataset.name, "version": version.version, "n_shards": len(keys)},
    )
    session.flush()
    return sorted(set(keys))


def delete_unreferenced_shards(ctx: ServiceContext, shard_keys: Iterable[str]) -> list[str]:
    """Delete the blobs among ``shard_keys`` that no dataset version (of any tenant: blobs are
    content-addressed and may be shared) lists any more; returns the keys deleted.

    The caller decides when: typically the keys ``purge_version`` returned, after its commit.
    A blob is deleted only once no shard row names it, so calling it early deletes nothing.
    """
    keys = sorted(set(shard_keys))
    foreign = [k for k in keys if not k.startswith(f"{shards.SHARD_KIND}/")]
    if foreign:
        raise ValueError(f"not dataset shard keys: {foreign[:5]}")
    with session_scope(ctx.session_factory) as session:
        referenced: set[str] = set()
        for i in range(0, len(keys), _LOOKUP_BATCH):
            batch = keys[i : i + _LOOKUP_BATCH]
            referenced.update(
                session.scalars(
                    select(DatasetShard.storage_key).where(DatasetShard.storage_key.in_(batch)).distinct()
                )
            )
    deleted = []
    for key in keys:
        if key in referenced:
            continue
        ctx.storage.delete(key)
        deleted.append(key)
    if deleted:
        log.info("dataset_shards_deleted", n=len(deleted))
    return deleted
