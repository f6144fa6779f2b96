"""Exact unlearning by retraining from scratch on the retain set (the gold standard reference).

The new model has the same architecture: the input model is deep-copied and every submodule's
``reset_parameters`` is called under the job's seed; parameters that no such module owns (e.g. a
learned positional embedding held directly by a custom module) are re-drawn from N(0, 0.02²), so no
trained value survives. The recipe is recorded in the report.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.params import MethodParams
from unlearning.methods.registry import register_method
from unlearning.training import train


class RetrainParams(MethodParams):
    epochs: int = Field(20, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0, le=10)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    gradient_restriction_alpha: float = Field(0.0, ge=0, le=10)


def reinitialise(model: torch.nn.Module, seed: int) -> list[str]:
    """Fresh parameters in place; returns the names re-drawn generically (no owning reset_parameters)."""
    covered: set[int] = set()
    generic: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in model.modules():
            reset = getattr(mod, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in mod.parameters(recurse=False))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if id(p) not in covered:
                    torch.nn.init.normal_(p, std=0.02)
                    generic.append(name)
    return generic


@register_method("retrain", params=RetrainParams, requires_retain=True)
def unlearn(ctx: RunContext[RetrainParams]) -> MethodOutcome:
    """Retrain a freshly initialised model of the same architecture on the retain set."""
    retain, params = ctx.retain, ctx.params
    assert retain is not None  # the top-level unlearn enforces requires_retain
    generic = reinitialise(ctx.model, ctx.seed)
    progress = ctx.progress
    recipe: dict[str, Any] = train(
        ctx.model,
        retain,
        epochs=params.epochs,
        lr=params.lr,
        batch_size=params.batch_size,
        optimizer=params.optimizer,
        momentum=params.momentum,
        weight_decay=params.weight_decay,
        seed=ctx.seed,
        device=ctx.device,
        gradient_restriction_alpha=params.gradient_restriction_alpha,
        progress=lambda _stage, f: progress("retrain", f),
        should_cancel=ctx.should_cancel,
    )
    recipe["reinitialised_generic"] = generic
    return MethodOutcome(ctx.model, {"recipe": recipe, "epochs_run": params.epochs})
