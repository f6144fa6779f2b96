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
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.params import MethodParams
from unlearning.methods.registry import register_method
from unlearning.methods.safety import check_finite_loss
from unlearning.samples import num_samples
from unlearning.targets import focus_on, resolve_target
from unlearning.types import Dataset


class IAUParams(MethodParams):
    lr: float = Field(1e-3, gt=0, le=10)
    steps: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    target: str | list[str] | None = "all"


def mean_gradient(
    ctx: RunContext[IAUParams], data: Dataset, theta: list[torch.nn.Parameter]
) -> list[torch.Tensor]:
    """∇θ of the mean per-sample loss over the whole data set, accumulated batch by batch."""
    model, n = ctx.model, num_samples(data)
    total = [torch.zeros_like(p) for p in theta]
    # A batch of a language model's logits is [B, T, V]: let the logits budget bound B.
    batches = iterate_batches(data, ctx.params.batch_size, device=ctx.device, num_outputs=output_size(model))
    for batch in batches:
        ctx.check_cancel()
        loss = loss_from_logits(logits(model, batch), batch, ctx.task).sum() / n
        check_finite_loss(loss, "IAU gradient")
        # A parameter outside the forward (allow_unused) keeps a zero gradient: Adam leaves it as it is.
        for acc, g in zip(total, torch.autograd.grad(loss, theta, allow_unused=True), strict=True):
            if g is not None:
                acc += g
    return total


@register_method("iau", params=IAUParams, requires_retain=True)
def unlearn(ctx: RunContext[IAUParams]) -> MethodOutcome:
    """Influence approximation: Adam step(s) on ∇L̄(retain) − ∇L̄(forget) (needs the retain set)."""
    retain, params = ctx.retain, ctx.params
    assert retain is not None  # the top-level unlearn enforces requires_retain
    names = resolve_target(ctx.model, params.target)
    with focus_on(ctx.model, names) as theta:
        opt = torch.optim.Adam(theta, lr=params.lr)
        for step in range(params.steps):
            g_r = mean_gradient(ctx, retain, theta)
            g_f = mean_gradient(ctx, ctx.forget, theta)
            for p, a, b in zip(theta, g_r, g_f, strict=True):
                p.grad = a - b
            opt.step()
            ctx.progress("unlearn", (step + 1) / params.steps)
    return MethodOutcome(
        ctx.model, {"steps": params.steps, "target_params": names, "n_retain": num_samples(retain)}
    )
