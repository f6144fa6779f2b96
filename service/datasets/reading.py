"""Reading samples of a dataset version: named ones, the retain set streamed, a seeded subset.

Each function looks its rows up in the index in a short transaction of its own (on SQLite every
transaction holds the database's write lock, so do not call them while this thread holds another
transaction open), then reads shards from storage outside any transaction, one at a time and only
those that hold wanted samples: memory stays at one shard plus the answer, whatever the size of
the data set.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from service.context import ServiceContext
from service.datasets import index, shards
from service.datasets.ids import SampleId, not_held, to_texts
from service.datasets.records import get_version_by_id, gone, shards_of
from service.datasets.states import SampleIdKind, VersionStatus
from service.db import session_scope
from service.errors import unprocessable
from unlearning.samples import TensorDict, take


@dataclass(frozen=True)
class _ShardRef:
    shard: int
    key: str
    n_samples: int


@dataclass(frozen=True)
class _Layout:
    """A version's shards in order, its columns, and the positions of some of its samples."""

    version: int
    sample_id_kind: SampleIdKind
    columns: dict[str, Any]
    shards: list[_ShardRef]
    positions: dict[str, tuple[int, int]]


def _layout(
    ctx: ServiceContext, dataset_version_id: str, sample_ids: Sequence[SampleId], *, strict: bool
) -> _Layout:
    with session_scope(ctx.session_factory) as session:
        dataset, version = get_version_by_id(session, dataset_version_id)
        if version.status == VersionStatus.PURGED:
            raise gone(f"version {version.version} of dataset {dataset.name} was purged after an erasure")
        kind = SampleIdKind(version.sample_id_kind)
        texts = to_texts(kind, sample_ids, strict=strict)
        return _Layout(
            version=version.version,
            sample_id_kind=kind,
            columns=dict(version.columns),
            shards=[_ShardRef(s.shard, s.storage_key, s.n_samples) for s in shards_of(session, version.id)],
            positions=index.positions(session, version.id, texts),
        )


def _concat(parts: Sequence[TensorDict], columns: dict[str, Any]) -> TensorDict:
    if not parts:
        return shards.empty(columns)
    if len(parts) == 1:
        return dict(parts[0])
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def read_samples(ctx: ServiceContext, dataset_version_id: str, sample_ids: Sequence[SampleId]) -> TensorDict:
    """The samples with these ids, in the order given (repeats dropped), as the engine's tensors
    (``inputs``/``labels`` or ``input_ids``[/``attention_mask``]).

    Reads only the shards that hold them, each once. 422 lists ids the version does not hold
    (``missing_sample_ids``); 404 for an unknown version id; 410 once the version's data is gone.
    """
    layout = _layout(ctx, dataset_version_id, sample_ids, strict=True)
    wanted = to_texts(layout.sample_id_kind, sample_ids)
    missing = [t for t in wanted if t not in layout.positions]
    if missing:
        raise not_held(layout.sample_id_kind, missing, layout.version)
    keys = {s.shard: s.key for s in layout.shards}
    parts: list[TensorDict] = []
    where: dict[tuple[int, int], int] = {}  # (shard, row) -> row of the concatenated parts
    for shard, rows in index.rows_by_shard(layout.positions[t] for t in wanted).items():
        data = shards.load(ctx.storage, keys[shard])
        parts.append(take(data, rows))
        for row in rows:
            where[(shard, row)] = len(where)
    joined = _concat(parts, layout.columns)
    if not wanted:
        return joined
    order = torch.tensor([where[layout.positions[t]] for t in wanted], dtype=torch.long)
    return take(joined, order)


def _excluded_rows(layout: _Layout) -> dict[int, list[int]]:
    return index.rows_by_shard(layout.positions.values())


def iter_retain_batches(
    ctx: ServiceContext, dataset_version_id: str, exclude_sample_ids: Sequence[SampleId], batch_size: int
) -> Iterator[TensorDict]:
    """The version's samples minus ``exclude_sample_ids``, in dataset order, in batches of
    ``batch_size`` (the last may be smaller), streamed shard by shard.

    Excluded ids the version does not hold are ignored (they are excluded either way). The index
    is read once, up front; shards are read lazily as the iterator is consumed.
    """
    if batch_size < 1:
        raise unprocessable(f"batch_size must be at least 1, got {batch_size}")
    layout = _layout(ctx, dataset_version_id, exclude_sample_ids, strict=False)
    return _retain_batches(ctx, layout, batch_size)


def _retain_batches(ctx: ServiceContext, layout: _Layout, batch_size: int) -> Iterator[TensorDict]:
    excluded = _excluded_rows(layout)
    pending: list[TensorDict] = []
    n_pending = 0
    for ref in layout.shards:
        drop = excluded.get(ref.shard)
        if drop is not None and len(drop) == ref.n_samples:
            continue  # nothing left in this shard: not even read
        data = shards.load(ctx.storage, ref.key)
        if drop:
            keep = torch.ones(ref.n_samples, dtype=torch.bool)
            keep[drop] = False
            data = take(data, keep)
        pending.append(data)
        n_pending += ref.n_samples - len(drop or ())
        while n_pending >= batch_size:
            joined = _concat(pending, layout.columns)
            yield take(joined, slice(0, batch_size))
            rest = take(joined, slice(batch_size, None))
            n_pending -= batch_size
            pending = [rest] if n_pending else []
    if n_pending:
        yield _concat(pending, layout.columns)


def _available_to_global(picks: Sequence[int], excluded: Sequence[int]) -> list[int]:
    """Map sorted ranks among the non-excluded positions to positions (``excluded`` sorted)."""
    out = []
    j = 0
    for rank in picks:
        position = rank + j
        while j < len(excluded) and excluded[j] <= position:
            j += 1
            position = rank + j
        out.append(position)
    return out


def retain_sample(
    ctx: ServiceContext,
    dataset_version_id: str,
    exclude_sample_ids: Sequence[SampleId],
    max_samples: int,
    seed: int,
) -> TensorDict:
    """A seeded uniform random subset of the version minus ``exclude_sample_ids``, of
    min(``max_samples``, setting ``dataset_retain_max_samples``, what is left) samples, in
    dataset order. The same seed and exclusions give the same subset. Reads only the shards
    that hold chosen samples.
    """
    if max_samples < 1:
        raise unprocessable(f"max_samples must be at least 1, got {max_samples}")
    layout = _layout(ctx, dataset_version_id, exclude_sample_ids, strict=False)
    starts = []
    total = 0
    for ref in layout.shards:
        starts.append(total)
        total += ref.n_samples
    shard_index = {ref.shard: i for i, ref in enumerate(layout.shards)}
    excluded = sorted(starts[shard_index[shard]] + row for shard, row in layout.positions.values())
    available = total - len(excluded)
    k = min(max_samples, ctx.settings.dataset_retain_max_samples, available)
    # random.sample over a range draws k distinct ranks without materialising the range.
    picks = sorted(random.Random(seed).sample(range(available), k))
    chosen: dict[int, list[int]] = {}
    for position in _available_to_global(picks, excluded):
        i = bisect.bisect_right(starts, position) - 1
        chosen.setdefault(i, []).append(position - starts[i])
    parts = [take(shards.load(ctx.storage, layout.shards[i].key), rows) for i, rows in sorted(chosen.items())]
    return _concat(parts, layout.columns)
