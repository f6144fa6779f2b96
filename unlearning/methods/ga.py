"""Uniform gradient ascent (``ga``): the baseline IMU improves on.

It is IMU's loop with every forget sample weighted equally — same θ (last linear layer), loss,
optimizer, schedule and options (early stop, relative steps, the step schedule, presets,
``scope="class"``, feature caching) — so that a comparison isolates the influence weighting. The
official ``GA.py`` of ``goodluckisallyouneed/IMU`` ascends on all parameters without the L1 term:
``{"target": "all", "alpha": 0}`` reproduces it.
"""

from __future__ import annotations

import torch

from unlearning.methods.ascent import AscentParams, ascend
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.registry import register_method
from unlearning.samples import num_samples


class GAParams(AscentParams):
    pass


@register_method("ga", params=GAParams)
def unlearn(ctx: RunContext[GAParams]) -> MethodOutcome:
    """Gradient ascent with equal weights on every forget sample."""
    n = num_samples(ctx.forget)
    return ascend(ctx, lambda: (torch.ones(n), {"n_selected": n}))
