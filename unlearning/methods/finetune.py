"""Fine-tuning on the retain set ("FT" in the unlearning literature, e.g. Warnecke et al. 2023).

Plain descent on the retain set: the forget samples are never seen again, so the model drifts away
from what it memorised of them (catastrophic forgetting) while it keeps the retain set. The run ends
once the forget accuracy reaches its target (see ``retain_loop``; ``repair_epochs`` default 0), or
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
    repair_epochs: int = Field(0, ge=0, le=10_000)


@register_method("finetune", params=FinetuneParams, requires_retain=True)
def unlearn(ctx: RunContext[FinetuneParams]) -> MethodOutcome:
    """Fine-tuning on the retain set until the forget accuracy reaches its target."""
    model, task = ctx.model, ctx.task
    loop = RetainLoop(ctx)
    for epoch in loop.epochs():
        for batch in loop.retain_batches(epoch):
            loop.step(loss_from_logits(logits(model, batch), batch, task).mean(), "fine-tuning")
    return loop.outcome()
