"""The sample index: one row per (dataset version, sample) saying where the sample lies.

Rows are written in bulk (executemany batches, which SQLAlchemy sends as multi-row INSERTs on
both backends) and copied between versions with INSERT ... SELECT inside the database, so a
50,000-sample version is indexed in about a second and an erasure never pulls the index through
Python. Lookups by id go in batches that stay under every backend's bound-parameter limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, distinct, func, insert, literal, select
from sqlalchemy.orm import Session

from service.tables import DatasetSample

INSERT_BATCH = 5_000
LOOKUP_BATCH = 500

_table = cast(Table, DatasetSample.__table__)


class IndexRow(NamedTuple):
    sample_id: str
    subject_digest: str | None
    shard: int
    shard_row: int


def insert_rows(session: Session, dataset_version_id: str, rows: Iterable[IndexRow]) -> int:
    """Add index rows to a version in batches; returns how many."""
    batch: list[dict[str, object]] = []
    count = 0
    for row in rows:
        batch.append(
            {
                "dataset_version_id": dataset_version_id,
                "sample_id": row.sample_id,
                "subject_digest": row.subject_digest,
                "shard": row.shard,
                "shard_row": row.shard_row,
            }
        )
        if len(batch) >= INSERT_BATCH:
            session.execute(insert(_table), batch)
            count += len(batch)
            batch = []
    if batch:
        session.execute(insert(_table), batch)
        count += len(batch)
    return count


def copy_rows(
    session: Session, from_version_id: str, to_version_id: str, skip_shards: Collection[int]
) -> None:
    """Copy a version's index rows, positions unchanged, to another version, except the rows of
    ``skip_shards`` (their shards were rewritten, their rows are inserted anew)."""
    columns = ["dataset_version_id", "sample_id", "subject_digest", "shard", "shard_row"]
    source = select(
        literal(to_version_id),
        _table.c.sample_id,
        _table.c.subject_digest,
        _table.c.shard,
        _table.c.shard_row,
    ).where(_table.c.dataset_version_id == from_version_id)
    if skip_shards:
        source = source.where(_table.c.shard.not_in(sorted(skip_shards)))
    session.execute(insert(_table).from_select(columns, source))


def _batches(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), LOOKUP_BATCH):
        yield values[i : i + LOOKUP_BATCH]


def positions(
    session: Session, dataset_version_id: str, sample_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """sample id -> (shard, row) for the given ids that the version holds (the others are absent)."""
    found: dict[str, tuple[int, int]] = {}
    for batch in _batches(sample_ids):
        stmt = select(_table.c.sample_id, _table.c.shard, _table.c.shard_row).where(
            _table.c.dataset_version_id == dataset_version_id, _table.c.sample_id.in_(batch)
        )
        found.update({sid: (shard, row) for sid, shard, row in session.execute(stmt)})
    return found


def rows_by_shard(positions: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """shard -> sorted rows."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for shard, row in positions:
        grouped[shard].append(row)
    return {shard: sorted(rows) for shard, rows in sorted(grouped.items())}


def subject_rows(session: Session, dataset_version_id: str, subject_digest: str) -> list[IndexRow]:
    """The version's samples of one subject, in dataset order."""
    stmt = (
        select(_table.c.sample_id, _table.c.subject_digest, _table.c.shard, _table.c.shard_row)
        .where(_table.c.subject_digest == subject_digest, _table.c.dataset_version_id == dataset_version_id)
        .order_by(_table.c.shard, _table.c.shard_row)
    )
    return [IndexRow(*row) for row in session.execute(stmt)]


def rows_in_shards(session: Session, dataset_version_id: str, shards: Collection[int]) -> list[IndexRow]:
    """Every index row of some shards of a version, in dataset order."""
    if not shards:
        return []
    stmt = (
        select(_table.c.sample_id, _table.c.subject_digest, _table.c.shard, _table.c.shard_row)
        .where(_table.c.dataset_version_id == dataset_version_id, _table.c.shard.in_(sorted(shards)))
        .order_by(_table.c.shard, _table.c.shard_row)
    )
    return [IndexRow(*row) for row in session.execute(stmt)]


def count_subjects(session: Session, dataset_version_id: str) -> int:
    stmt = select(func.count(distinct(_table.c.subject_digest))).where(
        _table.c.dataset_version_id == dataset_version_id
    )
    return int(session.scalar(stmt) or 0)


def delete_rows(session: Session, dataset_version_id: str) -> None:
    session.execute(_table.delete().where(_table.c.dataset_version_id == dataset_version_id))


def equals_rewrite(
    session: Session,
    version_id: str,
    source_id: str,
    rewritten_shards: Collection[int],
    rewritten_rows: Iterable[IndexRow],
) -> bool:
    """Whether ``version_id``'s index is exactly ``source_id``'s with the rows of
    ``rewritten_shards`` replaced by ``rewritten_rows``: the same samples, subjects and places.

    The rows outside those shards are compared inside the database (a join on the sample id,
    unique per version), the few rewritten ones here."""
    skip = sorted(rewritten_shards)
    own, src = _table.alias("own"), _table.alias("src")

    def kept(t: Any, vid: str) -> Any:
        cond = t.c.dataset_version_id == vid
        return cond & t.c.shard.not_in(skip) if skip else cond

    n_own = session.scalar(select(func.count()).select_from(own).where(kept(own, version_id)))
    n_src = session.scalar(select(func.count()).select_from(src).where(kept(src, source_id)))
    if n_own != n_src:
        return False
    same = own.join(
        src,
        (src.c.dataset_version_id == source_id)
        & (src.c.sample_id == own.c.sample_id)
        & (src.c.shard == own.c.shard)
        & (src.c.shard_row == own.c.shard_row)
        & src.c.subject_digest.is_not_distinct_from(own.c.subject_digest),
    )
    n_same = session.scalar(select(func.count()).select_from(same).where(kept(own, version_id)))
    if n_same != n_own:
        return False
    return set(rows_in_shards(session, version_id, skip)) == set(rewritten_rows)
