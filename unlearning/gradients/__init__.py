"""Per-sample gradients g_i = ∇θ loss_i of θ, by three back ends behind one choice.

* ``closed_form`` (:mod:`.closed_form`): θ a final linear head; matrix products over one forward pass;
* ``func`` (:mod:`.func`): any θ, ``torch.func`` vmap over grad in bounded chunks;
* ``loop`` (:mod:`.loop`): the official one-backward-per-sample reference.

``auto`` takes the closed form where it applies, else torch.func. Gradients are taken in eval mode
with gradients on θ only (:func:`~unlearning.targets.focus_on`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import torch
from torch import nn

from unlearning.batching import device_of
from unlearning.errors import ParamsError
from unlearning.gradients.closed_form import LinearHeadGradients
from unlearning.gradients.func import FuncGradients, func_chunk_size
from unlearning.gradients.loop import LoopGradients
from unlearning.gradients.source import GradientSource, RowGradients
from unlearning.samples import infer_task
from unlearning.targets import ClosedFormNotApplicable, Target, focus_on, resolve_target
from unlearning.types import Dataset, Task

__all__ = [
    "FuncGradients",
    "GradMethod",
    "GradientSource",
    "LinearHeadGradients",
    "LoopGradients",
    "RowGradients",
    "func_chunk_size",
    "per_sample_gradients",
    "with_gradients",
]

GradMethod = Literal["auto", "closed_form", "func", "loop"]
T = TypeVar("T")


def with_gradients(
    model: nn.Module,
    data: Dataset,
    task: Task,
    names: list[str],
    use: Callable[[GradientSource], T],
    *,
    method: GradMethod,
    chunk_size: int,
    batch_size: int,
    device: torch.device,
) -> T:
    """``use(source)`` for the back end ``method`` names, in eval mode with gradients on θ only.

    The closed form can find out that it does not apply only in its first forward pass, so ``auto``
    falls back around the whole of ``use``, not just the choice of back end.
    """
    with focus_on(model, names):
        if method in ("auto", "closed_form"):
            try:
                return use(LinearHeadGradients(model, data, task, names, device, batch_size=batch_size))
            except ClosedFormNotApplicable as exc:
                if method == "closed_form":
                    raise ParamsError(f"closed-form gradients do not apply: {exc}") from exc
            method = "func"
        if method == "func":
            return use(FuncGradients(model, data, task, names, device, chunk_size=chunk_size))
        if method == "loop":
            return use(LoopGradients(model, data, task, names, device))
    raise ParamsError(f"unknown gradient method {method!r}; use auto, closed_form, func or loop")


def per_sample_gradients(
    model: nn.Module,
    data: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    method: GradMethod = "func",
    chunk_size: int = 64,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample gradients [N, P] of θ (flattened in target order) by the chosen back end."""
    return with_gradients(
        model,
        data,
        task or infer_task(data),
        resolve_target(model, target),
        lambda source: torch.cat(list(source.rows())),
        method=method,
        chunk_size=chunk_size,
        batch_size=batch_size,
        device=device_of(model, device),
    )
