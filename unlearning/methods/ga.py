"""Uniform weights (``ga``): IMU's loop with every forget sample weighted equally.

Same θ, objective, anchor, optimizer, schedule and options (presets, early stop, ``scope="class"``,
feature caching), so that a comparison isolates the influence weighting; under the default
(``"anchored"``) preset that is matching (of the label's confidence on a classifier) or NPO with the
KL anchor, not plain ascent. The
official ``GA.py`` of ``goodluckisallyouneed/IMU`` ascends on all parameters without the L1 term:
``{"preset": "official", "target": "all", "alpha": 0}`` reproduces it.
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
