"""What an upload must hold, checked from its headers first and then a chunk of rows at a time.

The data columns are validated by the engine's own rules (``unlearning.data.validate_dataset``),
against a spec made from the data set's task rather than from a model: a data set is not tied
to one model, so only what holds for any model is checked here (keys, shapes, dtypes, finite
inputs, integer labels and token ids that are not negative, 0/1 masks with something to score).
Each model checks its own class count, vocabulary and input shape when it uses the data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.datasets.formats import Column, TensorFile
from service.datasets.states import DatasetTask, SampleIdKind
from unlearning.architectures import ModelSpec
from unlearning.data import validate_dataset
from unlearning.errors import DataError
from unlearning.samples import TensorDict

SAMPLE_IDS = "sample_ids"
SUBJECT_IDS = "subject_ids"
ID_COLUMNS = frozenset({SAMPLE_IDS, SUBJECT_IDS})
MAX_ID_CHARS = 200  # the index's column width; ids are references, not content

_DATA_COLUMNS = {
    DatasetTask.CLASSIFICATION: frozenset({"inputs", "input_ids", "labels", "attention_mask"}),
    DatasetTask.LANGUAGE_MODELING: frozenset({"input_ids", "attention_mask"}),
}
# No model, so no class count or vocabulary to hold labels and token ids to: any int64 is allowed
# that is not negative (the engine checks them against [0, bound)).
_UNBOUNDED = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class UploadPlan:
    """What the headers say: how many samples, which data columns, the spec they are checked by."""

    n_samples: int
    data_columns: tuple[str, ...]
    spec: ModelSpec


def _spec(task: DatasetTask, columns: Mapping[str, Column]) -> ModelSpec:
    if task is DatasetTask.LANGUAGE_MODELING or "input_ids" in columns:
        return ModelSpec(
            name=f"{task} data set",
            config={},
            task="causal-lm" if task is DatasetTask.LANGUAGE_MODELING else "classification",
            input_kind="tokens",
            input_shape=None,
            num_classes=_UNBOUNDED,
            max_len=None,
            vocab_size=_UNBOUNDED,
        )
    per_sample = columns["inputs"].shape[1:] if "inputs" in columns else ()
    if any(d == 0 for d in per_sample):
        raise DataError(f"inputs: per-sample shape {per_sample} holds no values")
    return ModelSpec(
        name=f"{task} data set",
        config={},
        task="classification",
        input_kind="float",
        input_shape=per_sample,
        num_classes=_UNBOUNDED,
        max_len=None,
    )


def plan_upload(file: TensorFile, task: DatasetTask) -> UploadPlan:
    """Keys, sample counts and id columns' shapes, from the headers alone (DataError if wrong)."""
    names = set(file.columns)
    allowed = _DATA_COLUMNS[task]
    unknown = sorted(names - allowed - ID_COLUMNS)
    if unknown:
        raise DataError(
            f"unknown arrays {unknown}; a {task} data set holds {sorted(allowed)} "
            f"and the id columns {sorted(ID_COLUMNS)}"
        )
    if SAMPLE_IDS not in names:
        raise DataError(
            "a data set version needs a 'sample_ids' array: one stable, unique id per sample "
            "(int64; in an .npz also unicode strings), which erasure requests name samples by"
        )
    for name in ID_COLUMNS & names:
        shape = file.columns[name].shape
        if len(shape) != 1:
            raise DataError(f"{name}: expected shape [N] (one id per sample), got {list(shape)}")
    n = file.columns[SAMPLE_IDS].shape[0]
    if SUBJECT_IDS in names and file.columns[SUBJECT_IDS].shape[0] != n:
        raise DataError(
            f"subject_ids has {file.columns[SUBJECT_IDS].shape[0]} values but the data set has {n} "
            "samples (sample_ids); give one subject id per sample ('' in a string array for none)"
        )
    data = tuple(sorted(names - ID_COLUMNS))
    if not data:
        raise DataError(f"the data set has no data arrays; a {task} data set holds {sorted(allowed)}")
    sizes = {name: file.columns[name].rows for name in (*data, SAMPLE_IDS)}
    if len(set(sizes.values())) > 1:
        described = ", ".join(
            f"{k} has {'no sample dimension' if v is None else v}" for k, v in sizes.items()
        )
        raise DataError(f"arrays have different numbers of samples: {described}")
    if n == 0:
        raise DataError("the data set is empty (0 samples)")
    return UploadPlan(n_samples=n, data_columns=data, spec=_spec(task, file.columns))


_SAMPLE_NUMBER = re.compile(r"\bsample (\d+)\b")


def validate_chunk(chunk: Mapping[str, Any], spec: ModelSpec, start: int) -> TensorDict:
    """Normalised tensors of rows [start, ...) by the engine's rules; the sample numbers of an
    error are made to count from the start of the upload, not of the chunk."""
    try:
        return validate_dataset(chunk, spec, max_samples=None, max_bytes=None)
    except DataError as exc:
        if not start:
            raise
        message = _SAMPLE_NUMBER.sub(lambda m: f"sample {int(m[1]) + start}", str(exc))
        raise DataError(message) from None


# -- id columns ------------------------------------------------------------------------------
# Ids stay numpy arrays, checked vectorised: a version of millions of samples never becomes
# millions of Python strings at once (the index is written from them a shard at a time).

_CHECK_ROWS = 1 << 20


def _native(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))


def _embedded_nul(values: np.ndarray) -> int | None:
    """The first sample whose (unicode) id holds a NUL, which no database column can store.
    (numpy pads with NULs, so only NULs before a string's end count.)"""
    width = values.dtype.itemsize // 4
    if width == 0:
        return None
    for start in range(0, len(values), _CHECK_ROWS):
        part = values[start : start + _CHECK_ROWS]
        codes = part.view(np.uint32).reshape(len(part), width)
        inside = np.arange(width) < np.char.str_len(part)[:, None]
        bad = ((codes == 0) & inside).any(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def _check_ids(name: str, values: np.ndarray) -> tuple[SampleIdKind, np.ndarray]:
    kind = values.dtype.kind
    if kind in "iu":
        if kind == "u" and values.size and int(values.max()) > _UNBOUNDED:
            raise DataError(f"{name}: values too large for int64")
        return SampleIdKind.INT, _native(values).astype(np.int64, copy=False)
    if kind == "U":
        values = _native(values)
        lengths = np.char.str_len(values)
        too_long = np.nonzero(lengths > MAX_ID_CHARS)[0]
        if too_long.size:
            i = int(too_long[0])
            raise DataError(
                f"{name}: the id of sample {i} has {int(lengths[i])} characters, at most {MAX_ID_CHARS}"
            )
        nul = _embedded_nul(values)
        if nul is not None:
            raise DataError(f"{name}: the id of sample {nul} holds a NUL character")
        return SampleIdKind.STR, values
    if kind == "S":
        raise DataError(f"{name}: byte strings are not accepted; store unicode strings (numpy 'U' arrays)")
    raise DataError(
        f"{name}: ids must be integers (int64) or, in an .npz, unicode strings; got {values.dtype}"
    )


def _first_duplicate(values: np.ndarray) -> tuple[Any, int, int, int] | None:
    """(value, first position, second position, number of duplicated values), or None."""
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    repeated = counts > 1
    if not repeated.any():
        return None
    # The duplicate met first in the upload's own order.
    i = int(np.argmin(np.where(repeated, first, np.iinfo(np.int64).max)))
    positions = np.nonzero(values == unique[i])[0]
    return unique[i].item(), int(positions[0]), int(positions[1]), int(repeated.sum())


def sample_ids(values: np.ndarray) -> tuple[SampleIdKind, np.ndarray]:
    """The sample ids, checked (int64 or unicode strings, non-empty, unique), as int64 or native
    unicode; ``id_texts`` gives the index's text of a range of them."""
    kind, values = _check_ids(SAMPLE_IDS, values)
    if kind is SampleIdKind.STR:
        empty = np.nonzero(np.char.str_len(values) == 0)[0]
        if empty.size:
            raise DataError(f"sample_ids: sample {int(empty[0])} has an empty id")
    duplicate = _first_duplicate(values)
    if duplicate is not None:
        value, a, b, count = duplicate
        raise DataError(
            f"sample_ids must be unique: {value!r} is the id of samples {a} and {b}"
            + (f" ({count} ids are repeated)" if count > 1 else ""),
        )
    return kind, values


def subject_ids(values: np.ndarray) -> np.ndarray:
    """The subject ids, checked like sample ids but not unique; an empty string means none."""
    return _check_ids(SUBJECT_IDS, values)[1]


def count_subjects(subjects: np.ndarray) -> int:
    distinct = np.unique(subjects)
    return int(len(distinct) - (1 if distinct.dtype.kind == "U" and (distinct == "").any() else 0))


def id_texts(values: np.ndarray, start: int, stop: int) -> list[str | None]:
    """The index's text of ids [start, stop): ints in decimal, strings as given, "" as None."""
    return [str(v) if v != "" else None for v in values[start:stop].tolist()]
