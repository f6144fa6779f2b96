"""What a data set is made of: its samples, its task, rows of it, several of them joined.

One set of rules for the whole engine (loading, validation, training, unlearning, verification):

* a data set is a dict of tensors whose first dimensions agree (the samples);
* its task is ``causal-lm`` when it holds ``input_ids`` (validated classification sets keep their
  token ids under ``inputs``), ``classification`` when it holds ``inputs`` and ``labels``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unlearning.errors import DataError
from unlearning.types import Task

TensorDict = dict[str, torch.Tensor]


def num_samples(data: Mapping[str, torch.Tensor]) -> int:
    """The common first dimension; DataError if the arrays disagree."""
    if not data:
        raise DataError("the data set has no arrays")
    sizes: dict[str, int] = {}
    for key, value in data.items():
        if value.dim() == 0:
            raise DataError(f"{key!r} is a scalar; every array needs a first (sample) dimension")
        sizes[key] = int(value.shape[0])
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{k} has {n}" for k, n in sorted(sizes.items()))
        raise DataError(f"arrays have different numbers of samples: {described}")
    return next(iter(sizes.values()))


def infer_task(data: Mapping[str, Any]) -> Task:
    # input_ids first: a causal LM may carry its own ``labels`` (targets with ignored positions).
    if "input_ids" in data:
        return "causal-lm"
    if "inputs" in data and "labels" in data:
        return "classification"
    raise DataError(
        "cannot tell the task: expected 'input_ids' (causal LM) or 'inputs' and 'labels' "
        f"(classification), got keys {sorted(data)}"
    )


def take(data: Mapping[str, torch.Tensor], index: torch.Tensor | slice | Sequence[int]) -> TensorDict:
    """Rows ``index`` (a slice, int positions or a bool mask) of every tensor of a data set."""
    idx = index if isinstance(index, torch.Tensor | slice) else torch.as_tensor(index, dtype=torch.long)
    return {k: v[idx] for k, v in data.items()}


def concat_datasets(datasets: Sequence[Mapping[str, torch.Tensor]]) -> TensorDict:
    """Concatenate data sets with the same keys (e.g. the forget sets of one batch of requests).

    Causal-LM ``input_ids`` of different lengths are right-padded with token 0 and masked out
    through ``attention_mask`` (created if absent), so requests of any length can share a job.
    """
    if not datasets:
        raise DataError("nothing to concatenate")
    keys = set(datasets[0])
    for i, ds in enumerate(datasets[1:], start=1):
        if set(ds) != keys:
            raise DataError(f"data set {i} has keys {sorted(ds)}, data set 0 has {sorted(keys)}")
    parts = [dict(ds) for ds in datasets]
    if "input_ids" in keys:
        width = max(int(p["input_ids"].shape[1]) for p in parts)
        if any(int(p["input_ids"].shape[1]) != width for p in parts) or "attention_mask" in keys:
            for p in parts:
                ids = p["input_ids"]
                n, t = ids.shape
                mask = p.get("attention_mask", torch.ones(n, t, dtype=torch.int64))
                p["input_ids"] = torch.nn.functional.pad(ids, (0, width - t), value=0)
                p["attention_mask"] = torch.nn.functional.pad(mask.to(torch.int64), (0, width - t), value=0)
    out: TensorDict = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if len({(t.dtype, tuple(t.shape[1:])) for t in tensors}) > 1:
            described = ", ".join(f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for t in tensors)
            raise DataError(f"cannot concatenate {key!r}: dtypes or per-sample shapes differ ({described})")
        out[key] = torch.cat(tensors)
    return out
