"""An upload, from bytes to stored shards: checked entirely before anything is stored.

Two passes over the rows, a shard's worth at a time: the first validates every chunk (so a NaN
in the last sample refuses the upload with nothing stored), the second normalises the same
chunks again and stores each as a shard. Memory stays at the upload plus one shard; the price is
validating twice, which is cheap next to storing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.context import ServiceContext
from service.datasets import checks, shards
from service.datasets.formats import open_upload
from service.datasets.index import IndexRow
from service.datasets.states import DatasetTask, SampleIdKind, UploadFormat
from service.datasets.subjects import SubjectHasher
from service.errors import Problem


@dataclass(frozen=True)
class PreparedUpload:
    """A checked upload whose shards are stored; what the version and its index rows record."""

    format: UploadFormat
    upload_sha256: str
    n_samples: int
    shard_samples: int
    columns: dict[str, Any]
    sample_id_kind: SampleIdKind
    sample_ids: list[str]
    subject_digests: list[str | None] | None
    shards: list[shards.StoredShard]

    @property
    def n_subjects(self) -> int:
        return len({d for d in self.subject_digests or () if d is not None})

    def index_rows(self) -> Iterator[IndexRow]:
        size = self.shard_samples
        digests = self.subject_digests
        for i, sample_id in enumerate(self.sample_ids):
            yield IndexRow(sample_id, digests[i] if digests is not None else None, i // size, i % size)


def too_large(size: int, limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"the data set upload is {size} bytes; at most {limit} are accepted (UNLEARN_DATASET_MAX_BYTES)",
        max_bytes=limit,
    )


def prepare_upload(
    ctx: ServiceContext, task: DatasetTask, blob: bytes, hasher: SubjectHasher
) -> PreparedUpload:
    """Validate an upload (DataError → 422, size → 413) and store its shards; touches no database."""
    settings = ctx.settings
    if len(blob) > settings.dataset_max_bytes:
        raise too_large(len(blob), settings.dataset_max_bytes)
    file = open_upload(blob, max_samples=settings.dataset_max_samples, max_bytes=settings.dataset_max_bytes)
    plan = checks.plan_upload(file, task)
    kind, sample_ids = checks.sample_ids(file.read(checks.SAMPLE_IDS))
    subjects = None
    if checks.SUBJECT_IDS in file.columns:
        subjects = checks.subject_ids(file.read(checks.SUBJECT_IDS))

    size = settings.dataset_shard_samples
    columns: dict[str, Any] = {}
    for start, chunk in file.chunks(plan.data_columns, plan.n_samples, size):
        tensors = checks.validate_chunk(chunk, plan.spec, start)
        columns = columns or shards.column_schema(tensors)

    stored = [
        shards.put(ctx.storage, start // size, checks.validate_chunk(chunk, plan.spec, start))
        for start, chunk in file.chunks(plan.data_columns, plan.n_samples, size)
    ]
    return PreparedUpload(
        format=file.format,
        upload_sha256=hashlib.sha256(blob).hexdigest(),
        n_samples=plan.n_samples,
        shard_samples=size,
        columns=columns,
        sample_id_kind=kind,
        sample_ids=sample_ids,
        subject_digests=None if subjects is None else [None if s is None else hasher(s) for s in subjects],
        shards=stored,
    )
