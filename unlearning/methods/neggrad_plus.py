"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", their strongest simple baseline).

Joint descent on the retain set and ascent on the forget set: each step's loss is
β · CE(retain batch) − (1 − β) · CE(forget batch), the forget batches cycled beside one pass over
the retain set per epoch. Plain NegGrad+ runs a fixed number of epochs; here the ascent term is
switched off once the forget accuracy reaches its target (see ``retain_loop``), and the steps that
follow, on the retain term alone, repair what the ascent damaged (``repair_fraction``).
"""

from __future__ import annotations

from pydantic import Field

from unlearning.losses import logits, loss_from_logits
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.registry import register_method
from unlearning.methods.retain_loop import RetainLoop, RetainLoopParams, cycle_batches


class NegGradPlusParams(RetainLoopParams):
    # Tuned on seed 0 of the memorising MNIST-1D MLP, 10% random (the setting of
    # benchmarks/RESULTS.md), each candidate run with three shuffling seeds: where the run stops is
    # chaotic (a step more or less of ascent before a check moves the Avg Gap by a point or two), so
    # one run per candidate ranks noise. β 0.95 → 0.93: a stronger ascent reaches the target in
    # fewer steps and does less damage on the way; repair 0.25 → 0.75: retain (and test) accuracy
    # come back without the forget accuracy drifting above the target, since the ascent turns on
    # again whenever a check finds it above. More repair (1.0) or β 0.92 / 0.94 did worse; the run
    # takes no more steps than the old defaults did (the ≥ 10× speed-up over retraining holds).
    beta: float = Field(0.93, gt=0, lt=1)  # weight of the retain term; 1 − beta weighs the forget term
    forget_batch_size: int = Field(64, ge=1, le=1_000_000)
    repair_fraction: float = Field(0.75, ge=0, le=100)


@register_method("neggrad_plus", params=NegGradPlusParams, requires_retain=True)
def unlearn(ctx: RunContext[NegGradPlusParams]) -> MethodOutcome:
    """NegGrad+: descent on the retain set and ascent on the forget set, until the forget target."""
    p, model, task = ctx.params, ctx.model, ctx.task
    loop = RetainLoop(ctx)
    forget_batches = cycle_batches(ctx.forget, p.forget_batch_size, loop.generator, ctx.device)
    ascent_steps = 0
    for _ in loop.epochs():
        for batch in loop.retain_batches():
            loss = p.beta * loss_from_logits(logits(model, batch), batch, task).mean()
            if loop.forgetting:
                fb = next(forget_batches)
                loss = loss - (1 - p.beta) * loss_from_logits(logits(model, fb), fb, task).mean()
                ascent_steps += 1
            loop.step(loss, "NegGrad+")
    return loop.outcome(ascent_steps=ascent_steps)
