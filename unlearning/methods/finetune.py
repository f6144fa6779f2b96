"""Fine-tuning on the retain set ("FT" in the unlearning literature, e.g. Warnecke et al. 2023).

Plain descent on the retain set: the forget samples are never seen again, so the model drifts away
from what it memorised of them (catastrophic forgetting) while it keeps the retain set. The run ends
once the forget accuracy reaches its target (see ``retain_loop``; ``repair_fraction`` default 0), or
after ``epochs``. The weakest of the retain-based methods on a model that memorised its data: the
retain gradients of such a model are close to zero, so it hardly moves.
"""

from __future__ import annotations

from pydantic import Field

from unlearning.losses import logits, loss_from_logits
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.registry import register_method
from unlearning.methods.retain_loop import RetainLoop, RetainLoopParams


class FinetuneParams(RetainLoopParams):
    epochs: int = Field(10, ge=1, le=10_000)
    lr: float = Field(1e-2, gt=0, le=10)
    repair_fraction: float = Field(0.0, ge=0, le=100)  # no forget term: nothing to repair


@register_method("finetune", params=FinetuneParams, requires_retain=True)
def unlearn(ctx: RunContext[FinetuneParams]) -> MethodOutcome:
    """Fine-tuning on the retain set until the forget accuracy reaches its target."""
    model, task = ctx.model, ctx.task
    loop = RetainLoop(ctx)
    for _ in loop.epochs():
        for batch in loop.retain_batches():
            loop.step(loss_from_logits(logits(model, batch), batch, task).mean(), "fine-tuning")
    return loop.outcome()
