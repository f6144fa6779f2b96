"""NPO (negative preference optimisation, Zhang et al. 2024): the retain-free standard for LMs.

Every forget sample pushed away from the original model with the NPO loss
(2/β)·softplus(β(ℓ_ref − ℓ)) — gradient ascent whose weight 2σ(β(ℓ_ref − ℓ)) fades once a sample's
loss has left the original's, so it slows down by itself where plain ascent runs away. It is the
ascent loop of ``imu`` and ``ga`` with uniform weights and ``objective="npo"``: the same presets,
KL anchor on the anchor half of the eval set, early stop and utility guard (``methods/ascent``).
With no params it runs the ``"anchored"`` preset (all parameters, Adam, KL anchor when an eval set
is given); ``{"preset": "official"}`` is plain NPO with the paper-style SGD recipe of the loop.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from unlearning.methods.ascent import AscentParams, ascend
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.registry import register_method
from unlearning.samples import num_samples


class NPOParams(AscentParams):
    # The objective is the method: every preset runs NPO.
    EXTRA_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"objective": "npo", "alpha": 0.0},
        "adaptive": {"objective": "npo"},
        "anchored": {"objective": "npo"},
    }

    objective: Literal["npo"] = "npo"


@register_method("npo", params=NPOParams)
def unlearn(ctx: RunContext[NPOParams]) -> MethodOutcome:
    """Negative preference optimisation against the original model, every forget sample weighted equally."""
    n = num_samples(ctx.forget)
    return ascend(ctx, lambda: (torch.ones(n), {"n_selected": n}))
