"""IAU (Influence Approximation Unlearning, Liu et al. 2025): one incremental step on an "opposite" point.

Official recipe (``Lolo1222/IAU``, ``IAU_unlearn.py``): gradients of the mean CE over the whole
retain set and of minus the mean CE over the whole forget set are accumulated into ``.grad`` and one
``Adam(model.parameters(), lr=1e-3)`` step is taken, i.e. a step on g = ∇L̄(D_r) − ∇L̄(D_f) over all
parameters. Here the means are accumulated over batches (same value, bounded memory) and ``steps``
> 1 repeats the step with g recomputed on the current model. Deviation: gradients are taken in
eval mode (the official model stays in train mode), so BatchNorm uses its running statistics and
the result does not depend on the batch size. Works best on models trained with Gradient
Restriction (``unlearning.training.train(..., gradient_restriction_alpha=0.005)``).
"""

from __future__ import annotations

import torch
from pydantic import Field

from unlearning.batching import iterate_batches
from unlearning.budgets import output_size
from unlearning.losses import logits, loss_from_logits
from unlearning.methods.base import MethodParams, check_cancel, check_finite_loss, register_method
from unlearning.samples import infer_task, num_samples
from unlearning.targets import resolve_target, target_params
from unlearning.types import CancelFn, Dataset, ProgressFn, Task, UnlearnResult


class IAUParams(MethodParams):
    lr: float = Field(1e-3, gt=0, le=10)
    steps: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    target: str | list[str] | None = "all"


def mean_gradient(
    model: torch.nn.Module,
    data: Dataset,
    theta: list[torch.nn.Parameter],
    task: Task,
    batch_size: int,
    device: torch.device,
    should_cancel: CancelFn,
) -> list[torch.Tensor]:
    """∇θ of the mean per-sample loss over the whole data set, accumulated batch by batch."""
    n = num_samples(data)
    total = [torch.zeros_like(p) for p in theta]
    # A batch of a language model's logits is [B, T, V]: let the budget in budgets.py bound B.
    for batch in iterate_batches(data, batch_size, device=device, num_outputs=output_size(model)):
        check_cancel(should_cancel)
        loss = loss_from_logits(logits(model, batch), batch, task).sum() / n
        check_finite_loss(loss, "IAU gradient")
        # A parameter outside the forward (allow_unused) keeps a zero gradient: Adam leaves it as it is.
        for acc, g in zip(total, torch.autograd.grad(loss, theta, allow_unused=True), strict=True):
            if g is not None:
                acc += g
    return total


@register_method("iau", params=IAUParams, requires_retain=True)
def unlearn(
    model: torch.nn.Module,
    forget: Dataset,
    params: IAUParams,
    *,
    eval: Dataset | None,
    retain: Dataset | None,
    device: torch.device,
    seed: int,
    progress: ProgressFn,
    should_cancel: CancelFn,
) -> UnlearnResult:
    """Influence approximation: Adam step(s) on ∇L̄(retain) − ∇L̄(forget) (needs the retain set)."""
    assert retain is not None  # the top-level unlearn enforces requires_retain
    task = infer_task(forget)
    names = resolve_target(model, params.target)
    theta = target_params(model, names)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in theta:
        p.requires_grad_(True)
    model.eval()
    opt = torch.optim.Adam(theta, lr=params.lr)
    for step in range(params.steps):
        g_r = mean_gradient(model, retain, theta, task, params.batch_size, device, should_cancel)
        g_f = mean_gradient(model, forget, theta, task, params.batch_size, device, should_cancel)
        for p, a, b in zip(theta, g_r, g_f, strict=True):
            p.grad = a - b
        opt.step()
        progress("unlearn", (step + 1) / params.steps)
    for p in model.parameters():
        p.requires_grad_(True)
    return UnlearnResult(
        model, {"steps": params.steps, "target_params": names, "n_retain": num_samples(retain)}
    )
