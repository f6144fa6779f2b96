"""Plain supervised training, optionally with IAU's Gradient Restriction loss.

Gradient Restriction (IAU, ``Lolo1222/IAU`` ``train_model.py``, ``train`` with ``model_fix_flag=1``):
ℓ_GR = ℓ + α · Σ_tensors ‖∇θ ℓ‖₂, the gradient taken with ``create_graph=True`` so the penalty is
differentiated too (double backprop); the official α is 0.005. A model trained this way keeps small
per-sample gradients, which makes IAU's one-step update a better approximation of retraining.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from unlearning.batching import iterate_batches, resolve_device
from unlearning.errors import CancelledError, DivergedError, ParamsError
from unlearning.losses import logits, loss_from_logits
from unlearning.samples import infer_task, num_samples
from unlearning.types import CancelFn, Dataset, ProgressFn, Task

OptimizerName = Literal["adam", "sgd", "adamw"]

DEFAULT_GR_ALPHA = 0.005


def make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ParamsError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def gradient_restriction_loss(loss: torch.Tensor, params: list[nn.Parameter], alpha: float) -> torch.Tensor:
    """ℓ + α Σ_tensors ‖∇θ ℓ‖₂ (double backprop through the gradient norms)."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    penalty = sum((g.norm() for g in grads if g is not None), torch.zeros((), device=loss.device))
    return loss + alpha * penalty


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    task: Task | None = None,
    gradient_restriction_alpha: float = 0.0,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``data`` (mean loss per batch, shuffled with ``seed``).

    Returns the recipe and the mean training loss of every epoch.
    """
    if epochs < 0 or lr <= 0 or batch_size < 1:
        raise ParamsError("need epochs >= 0, lr > 0 and batch_size >= 1")
    task = task or infer_task(data)
    dev = resolve_device(device)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = num_samples(data)
    history: list[float] = []
    model.train()
    for epoch in range(epochs):
        if should_cancel is not None and should_cancel():
            raise CancelledError("training cancelled")
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for batch in iterate_batches(data, batch_size, shuffle=True, generator=gen, device=dev):
            loss = loss_from_logits(logits(model, batch), batch, task).mean()
            if gradient_restriction_alpha > 0:
                loss = gradient_restriction_loss(loss, params, gradient_restriction_alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * num_samples(batch)
        epoch_loss = float(total) / max(n, 1)
        if epoch_loss != epoch_loss or abs(epoch_loss) == float("inf"):
            raise DivergedError(f"training loss is not finite at epoch {epoch}")
        history.append(epoch_loss)
        if progress is not None:
            progress("train", (epoch + 1) / epochs)
    model.eval()
    return {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "momentum": momentum if optimizer == "sgd" else None,
        "weight_decay": weight_decay,
        "gradient_restriction_alpha": gradient_restriction_alpha,
        "seed": seed,
        "loss_history": history,
    }
