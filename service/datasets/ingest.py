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

import numpy as np

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
    sample_ids: np.ndarray  # int64 or unicode, checked
    subjects: np.ndarray | None  # int64 or unicode ("" for none), checked
    shards: list[shards.StoredShard]

    @property
    def n_subjects(self) -> int:
        return 0 if self.subjects is None else checks.count_subjects(self.subjects)

    def index_rows(self, hasher: SubjectHasher) -> Iterator[IndexRow]:
        """The index rows, made a shard at a time (never a list of every sample's id)."""
        size = self.shard_samples
        for shard, start in enumerate(range(0, self.n_samples, size)):
            stop = min(start + size, self.n_samples)
            ids = checks.id_texts(self.sample_ids, start, stop)
            subjects = checks.id_texts(self.subjects, start, stop) if self.subjects is not None else None
            for row, sample_id in enumerate(ids):
                subject = subjects[row] if subjects is not None else None
                assert sample_id is not None  # checked: no empty sample id
                yield IndexRow(sample_id, None if subject is None else hasher(subject), shard, row)


def too_large(size: int, limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"the data set upload is {size} bytes; at most {limit} are accepted (UNLEARN_DATASET_MAX_BYTES)",
        max_bytes=limit,
    )


def prepare_upload(ctx: ServiceContext, task: DatasetTask, blob: bytes) -> PreparedUpload:
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
        subjects=subjects,
        shards=stored,
    )
