"""Checks every method makes while it runs: cancellation, and a loss or model gone non-finite."""

from __future__ import annotations

import math

import torch

from unlearning.errors import CancelledError, DivergedError
from unlearning.types import CancelFn


def check_cancel(should_cancel: CancelFn | None) -> None:
    if should_cancel is not None and should_cancel():
        raise CancelledError("cancelled on request")


def check_finite_loss(loss: torch.Tensor, where: str) -> None:
    # A scalar is read once (this runs every ascent step); isfinite + all + read costs three ops.
    scalar = loss.numel() == 1
    if not (math.isfinite(float(loss.detach())) if scalar else bool(torch.isfinite(loss).all())):
        raise DivergedError(f"loss became {loss.detach()} ({where}); try a smaller lr")


def all_finite(model: torch.nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
