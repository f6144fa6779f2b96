"""Forward pass, per-sample loss and accuracy for the two tasks the engine knows.

Classification: ``{"inputs", "labels"}``, loss = cross entropy per sample.
Causal LM: ``{"input_ids", "attention_mask"?, "labels"?}``, loss = mean next-token cross entropy
per sequence (logits at t predict token t+1), over the tokens the mask keeps; this is the
per-sequence loss the official IMU LM code uses (``synthetic/unlearn_IMU.py``, ``loss_vector``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.errors import DataError
from unlearning.types import Dataset, Task

IGNORE_INDEX = -100

# Bound on the logits of one batched forward pass over a data set (elements; 512 MiB in float32).
# A causal LM's logits are [B, T, V]: with V = 50k and T = 128 a fixed 1024 samples would be ~26 GB,
# so batches over data sets shrink to fit (see ``batch_size_for``). A classifier's [B, C] logits stay
# far below it (1024 samples fit up to C = 131072), so its batches are what the caller asked for.
MAX_LOGIT_ELEMENTS = 1 << 27


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → cuda when available, else cpu; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def infer_task(batch: Mapping[str, torch.Tensor]) -> Task:
    if "input_ids" in batch:
        return "causal-lm"
    if "inputs" in batch:
        return "classification"
    raise DataError(f"cannot infer the task from keys {sorted(batch)}: need 'inputs' or 'input_ids'")


def num_samples(data: Dataset) -> int:
    key = "input_ids" if "input_ids" in data else "inputs"
    if key not in data:
        raise DataError(f"data set has no 'inputs' or 'input_ids' (keys: {sorted(data)})")
    return int(data[key].shape[0])


def to_device(
    batch: Mapping[str, torch.Tensor], device: torch.device | str | None
) -> dict[str, torch.Tensor]:
    if device is None:
        return dict(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def take(data: Dataset, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    """Rows ``index`` of every tensor of a data set."""
    return {k: v[index] for k, v in data.items()}


def output_size(model: nn.Module) -> int | None:
    """Size of the model output's last dimension (classes, or the vocabulary), read from its layers.

    No forward pass: the ``head`` attribute the architectures attach (built-ins and Hugging Face),
    else HF's output embeddings, else the last ``nn.Linear``; a causal LM whose head is not a linear
    layer (logits from the embedding matrix) is covered by the largest ``nn.Embedding``. The larger
    of the last two is taken, so an unusual layout errs towards smaller batches. None if unknown.
    """
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return int(head.out_features)
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        try:
            out = get_out()
        except Exception:  # an unusual model: fall back to scanning its layers
            out = None
        if isinstance(out, nn.Linear):
            return int(out.out_features)
    sizes = [int(m.out_features) for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    sizes += [int(m.num_embeddings) for m in model.modules() if isinstance(m, nn.Embedding)]
    return max(sizes) if sizes else None


def logit_elements_per_sample(data: Dataset, num_outputs: int) -> int:
    """Logits elements one sample produces: T·V for a causal LM (``input_ids`` [N, T]), else C."""
    ids = data.get("input_ids")
    length = int(ids.shape[1]) if ids is not None and ids.dim() >= 2 else 1
    return max(1, length * int(num_outputs))


def batch_size_for(data: Dataset, requested: int, num_outputs: int | None) -> int:
    """``requested`` samples per forward pass, fewer where their logits would pass ``MAX_LOGIT_ELEMENTS``.

    B = max(1, min(requested, MAX_LOGIT_ELEMENTS // (T·V))) for a causal LM, // C for a classifier;
    ``num_outputs`` None (unknown output size) leaves ``requested`` as it is.
    """
    if requested < 1:
        raise ValueError(f"batch size must be at least 1, got {requested}")
    if num_outputs is None:
        return requested
    return max(1, min(requested, MAX_LOGIT_ELEMENTS // logit_elements_per_sample(data, num_outputs)))


def iterate_batches(
    data: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    num_outputs: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches of a data set dict, moved to ``device``; the order is drawn from ``generator``.

    With ``num_outputs`` (the model's output size, e.g. ``output_size(model)``) the batch size is an
    upper bound, lowered by :func:`batch_size_for` to keep each batch's logits within budget; pass it
    for forward passes over a data set (evaluation, influence), not for training batches, whose size
    is part of the optimisation.
    """
    n = num_samples(data)
    batch_size = batch_size_for(data, batch_size, num_outputs)
    if shuffle:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield to_device(take(data, order[start : start + batch_size]), device)
    else:
        for start in range(0, n, batch_size):
            yield to_device(take(data, slice(start, start + batch_size)), device)


def _accepts_attention_mask(model: nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "attention_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def logits(
    model: nn.Module, batch: Mapping[str, torch.Tensor], forward: Callable[..., Any] | None = None
) -> torch.Tensor:
    """Model output as a logits tensor; Hugging Face outputs carry it in ``.logits``.

    ``forward`` replaces ``model(...)`` (torch.func passes a ``functional_call`` here).
    """
    fwd = forward if forward is not None else model
    if "input_ids" in batch:
        if "attention_mask" in batch and _accepts_attention_mask(model):
            out = fwd(batch["input_ids"], attention_mask=batch["attention_mask"])
        else:
            out = fwd(batch["input_ids"])
    else:
        out = fwd(batch["inputs"])
    return getattr(out, "logits", out)


def _math_dtype(z: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast for the loss; float64 stays float64 (tests compare paths tightly).
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def lm_targets(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets [B, T-1] and a float mask of the positions that count."""
    ids = batch["input_ids"]
    targets = batch["labels"][:, 1:] if "labels" in batch else ids[:, 1:]
    valid = targets != IGNORE_INDEX
    if "attention_mask" in batch:
        mask = batch["attention_mask"].bool()
        # A prediction counts only when both its context token and its target are real tokens.
        valid = valid & mask[:, 1:] & mask[:, :-1]
    return targets.clamp_min(0), valid.to(torch.float32)


def loss_from_logits(z: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task) -> torch.Tensor:
    """Per-sample loss [B] from logits (float32 math even for half-precision models)."""
    if task == "classification":
        return F.cross_entropy(_math_dtype(z), batch["labels"].long(), reduction="none")
    targets, valid = lm_targets(batch)
    zz = _math_dtype(z[:, :-1])
    tok = F.cross_entropy(zz.reshape(-1, zz.shape[-1]), targets.reshape(-1).long(), reduction="none")
    valid = valid.to(tok.dtype)
    tok = tok.view_as(valid) * valid
    return tok.sum(1) / valid.sum(1).clamp_min(1.0)


def correct_from_logits(z: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task) -> torch.Tensor:
    """Per-sample accuracy [B] in [0, 1]: 0/1 for classification, next-token accuracy for an LM."""
    if task == "classification":
        return (z.argmax(-1) == batch["labels"]).to(torch.float32)
    targets, valid = lm_targets(batch)
    hit = (z[:, :-1].argmax(-1) == targets).to(torch.float32) * valid
    return hit.sum(1) / valid.sum(1).clamp_min(1.0)


def per_sample_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None
) -> torch.Tensor:
    task = task or infer_task(batch)
    return loss_from_logits(logits(model, batch), batch, task)


def per_sample_correct(
    model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None
) -> torch.Tensor:
    task = task or infer_task(batch)
    return correct_from_logits(logits(model, batch), batch, task)


@torch.no_grad()
def accuracy(model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None) -> float:
    return float(per_sample_correct(model, batch, task).mean())
