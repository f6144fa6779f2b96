"""Batches of a data set on a device: which device, moving tensors there, iterating in batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from unlearning.budgets import batch_size_for
from unlearning.samples import num_samples, take
from unlearning.types import Dataset


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → cuda when available, else cpu; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """``device`` when given, else where the model's parameters are (cpu for a model without any)."""
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(
    batch: Mapping[str, torch.Tensor], device: torch.device | str | None
) -> dict[str, torch.Tensor]:
    if device is None:
        return dict(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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
    upper bound, lowered by :func:`~unlearning.budgets.batch_size_for` to keep each batch's logits
    within budget; pass it for forward passes over a data set (evaluation, influence), not for
    training batches, whose size is part of the optimisation.
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
