"""IMU (Influence-guided Machine Unlearning, Fan et al. 2025): gradient ascent weighted by influence.

Official recipe (``goodluckisallyouneed/IMU``, ``Classification/unlearn/IMU.py`` ``IMU`` and
``compute_combined_loss``, ``unlearn/impl.py`` ``_iterative_unlearn_impl``, ``arg_parser.py``):
θ = last linear layer only; per batch of the selected samples L = −Σ w_i·CE_i / Σ w_i + α‖θ‖₁ with α = 0.2;
SGD lr 0.01, momentum 0.9, weight decay 5e-4; 10 epochs of batch 256 (shuffled); MultiStepLR with the
default ``--decreasing_lr 91,136`` and γ = 0.1 (so the rate is constant over 10 epochs); weights
computed once at epoch 0. ``{"preset": "official"}`` runs exactly that, its train-mode forward
passes included (``bn_mode="train"``); the only deliberate deviation is that the official code's
overwrite of sample 0's gradient (an in-place ``+=`` on a view in ``compute_all_gradients``) is not
reproduced. ``imu`` with no params runs the recommended ``"anchored"`` preset (docs/methods.md):
every parameter, matching (of the label's confidence on a classifier) or NPO under a KL anchor, the
weights over every sample of negative influence, eval-mode steps (only θ changes; BatchNorm
statistics and dropout stay as registered).

Options beyond the paper (relative steps, early stopping, the utility guard, the adaptive step
schedule, class scope, feature caching) are the ascent loop's: see ``methods/ascent``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from unlearning.gradients import GradMethod
from unlearning.influence import imu_sample_weights
from unlearning.methods.ascent import AscentParams, ascend
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.registry import register_method


class IMUParams(AscentParams):
    # Under the anchored preset every forget sample must come to look unseen, so IMU keeps all the
    # samples of negative influence (the paper keeps the top 10% of them) and weighs them.
    EXTRA_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"anchored": {"top_fraction": 1.0}}

    top_fraction: float = Field(0.1, gt=0, le=1)
    clip_quantile: float = Field(0.93, ge=0, le=1)
    fisher_lambda: float = Field(0.01, gt=0)
    recompute: Literal["never", "epoch"] = "never"
    influence_method: GradMethod = "auto"
    chunk_size: int = Field(64, ge=1, le=1_000_000)


@register_method("imu", params=IMUParams)
def unlearn(ctx: RunContext[IMUParams]) -> MethodOutcome:
    """Influence-guided unlearning: gradient ascent on the last layer, weighted by each sample's influence."""
    p = ctx.params

    def influence_weights() -> tuple[torch.Tensor, dict[str, Any]]:
        return imu_sample_weights(
            ctx.model,
            ctx.forget,
            target=p.target,
            top_fraction=p.top_fraction,
            clip_quantile=p.clip_quantile,
            fisher_lambda=p.fisher_lambda,
            method=p.influence_method,
            chunk_size=p.chunk_size,
            device=ctx.device,
        )

    return ascend(ctx, influence_weights, recompute=p.recompute == "epoch", weigh_share=0.1)
