"""Uniform gradient ascent (``ga``): the baseline IMU improves on.

It is IMU's loop with every forget sample weighted equally — same θ (last linear layer), loss,
optimizer, schedule and options (early stop, relative steps, the step schedule, presets,
``scope="class"``, feature caching) — so that a comparison isolates the influence weighting. The
official ``GA.py`` of ``goodluckisallyouneed/IMU`` ascends on all parameters without the L1 term:
``{"target": "all", "alpha": 0}`` reproduces it.
"""

from __future__ import annotations

import torch

from unlearning.methods.base import register_method
from unlearning.methods.imu import AscentParams, plan_checks, run_ascent
from unlearning.samples import num_samples
from unlearning.types import CancelFn, Dataset, ProgressFn, UnlearnResult


class GAParams(AscentParams):
    pass


@register_method("ga", params=GAParams)
def unlearn(
    model: torch.nn.Module,
    forget: Dataset,
    params: GAParams,
    *,
    eval: Dataset | None,
    retain: Dataset | None,
    device: torch.device,
    seed: int,
    progress: ProgressFn,
    should_cancel: CancelFn,
) -> UnlearnResult:
    """Gradient ascent with equal weights on every forget sample."""
    plan_checks(params, forget, eval)  # fail on params that cannot run before any work
    n = num_samples(forget)
    report = run_ascent(
        model,
        forget,
        torch.ones(n),
        params,
        eval=eval,
        device=device,
        seed=seed,
        progress=progress,
        should_cancel=should_cancel,
    )
    report["n_selected"] = n
    return UnlearnResult(model, report)
