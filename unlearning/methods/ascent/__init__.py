"""The forgetting loop ``imu``, ``ga`` and ``npo`` share, which differ only in the per-sample weights
(and ``npo`` in a fixed objective).

:func:`ascend` runs a method from its per-sample weights: the plan (failing on params that cannot run
before any work), the weights, then the :class:`~.loop.AscentLoop`. What a step minimises is an
:class:`~.objective.Objective`: a forget term (plain ascent, NPO or matching to how the unseen data
look) plus, by default, a KL anchor to the original model on the held-out data the method was
given (``objective.py``); ``plan.py`` resolves which, and the defaults (the ``"anchored"`` preset,
``params.py``; docs/methods.md has the measurements).

Options beyond the IMU paper (``params.py``), for a service that must forget without hand-tuning:

* ``lr_mode="relative"``: the ascent gradient is rescaled to ‖θ‖/‖∇‖, so every step moves θ by
  ``lr``·‖θ‖ whatever the gradient scale. On memorised samples CE ≈ 0 and the raw gradient vanishes
  (the official 10 epochs change nothing on a memorising MLP); the relative step does not.
* ``alpha_mode="mean"``: α·‖θ‖₁/P instead of α·‖θ‖₁, so α means the same for any layer width
  (α = 0.2 on the sum collapses a small MLP).
* ``early_stop``: ``"eval_accuracy"`` stops once forget accuracy ≤ eval accuracy,
  ``"forget_accuracy"`` once forget accuracy ≤ ``forget_accuracy_target``, ``"mia"`` once the
  loss-MIA AUC forget-vs-eval ≤ ``mia_target``; ``"auto"`` = ``"forget_accuracy"`` for
  ``scope="class"``, none for matching and for a causal LM (fixed epochs: ``plan.py``), else
  ``"eval_accuracy"`` when an eval set is given, else none. Checked before the first step and after
  every epoch (or every ``check_every`` steps), at most ``max_epochs`` epochs.
* ``recompute="epoch"`` (imu): recompute influences and weights on the current model every epoch.
* ``max_eval_drop`` (with an eval set, and early stopping or an objective that pushes on): a
  utility guard — once eval accuracy falls more than this below its starting value, θ goes back to
  the last check within the limit and the loop stops (``stop_reason="max_eval_drop"``): the most
  forgetting the utility budget allows. (The adaptive step schedule goes on with smaller steps
  instead of stopping at once: ``schedule.py``.)
* ``step_schedule``: ``"constant"`` or ``"adaptive"`` (``schedule.py``). Without checks (no stopping
  rule and no guard) the schedule is constant. The report gives ``step_schedule`` (as run), ``steps``
  (every step taken, backtracked ones included), ``checks``, ``backtracks`` (θ sent back, the constant
  schedule's final guard stop included) and ``final_step_size`` (the rate of the last step: a
  fraction of ‖θ‖ with ``lr_mode="relative"``).
* ``scope="class"``: the forget set is all training data of one or more classes (those of its
  labels). A model retrained without a class never predicts it: on sklearn digits (MLP and LeNet,
  each of the 10 classes) the retrained model's accuracy on the forgotten class is exactly 0.000, on
  its training and its test samples alike. So "forget accuracy ≤ eval accuracy" is the wrong rule
  there (it stops at forget accuracy ≈ 0.96 on digits); the target is forget accuracy ≤
  ``forget_accuracy_target``, default 0.0 (what retraining gives; 1/num_classes would leave a 0.1 gap
  to it). Eval samples of the forgotten classes are *supposed* to lose accuracy, so the guard and the
  eval metrics of the checks use only the other classes' eval samples (``plan.py``). The report gives
  ``forgotten_classes`` and ``n_eval_excluded``.
* ``cache_features`` (default on): when θ is exactly a final ``nn.Linear`` whose output is the model
  output, steps and checks run on the head alone over cached head-input features (``features.py``);
  falls back to the full forward otherwise (another target, a tied or reused head, features above
  ``FEATURE_CACHE_MAX_ELEMENTS``). ``features_cached`` in the report says which path ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unlearning.methods.ascent.loop import AscentLoop
from unlearning.methods.ascent.objective import Objective, WeightedAscent
from unlearning.methods.ascent.params import CLASS_FORGET_ACCURACY_TARGET, PRESETS, AscentParams
from unlearning.methods.ascent.plan import CheckPlan, plan_checks, split_by_class
from unlearning.methods.context import MethodOutcome, RunContext

__all__ = [
    "CLASS_FORGET_ACCURACY_TARGET",
    "PRESETS",
    "AscentLoop",
    "AscentParams",
    "CheckPlan",
    "Objective",
    "Weigh",
    "WeightedAscent",
    "ascend",
    "plan_checks",
    "split_by_class",
]

# Per-sample weights [N] of the forget set on the current model, and report entries (n_selected...).
Weigh = Callable[[], tuple[torch.Tensor, dict[str, Any]]]


def ascend(
    ctx: RunContext[AscentParams],
    weigh: Weigh,
    *,
    recompute: bool = False,
    weigh_share: float = 0.0,
    objective: Objective | None = None,
) -> MethodOutcome:
    """A weighted-ascent method: weights from ``weigh`` (again every epoch with ``recompute``), then
    the loop. ``weigh_share`` is the part of the progress the first weighing takes (0: no stage of
    its own)."""
    # Fails on params that cannot run, before any work.
    plan = plan_checks(ctx.params, ctx.forget, ctx.eval, ctx.seed)
    history: list[int] = []

    def weights_now() -> tuple[torch.Tensor, dict[str, Any]]:
        ctx.check_cancel()
        weights, info = weigh()
        history.append(info["n_selected"])
        return weights, info

    if weigh_share:
        ctx.progress("influence", 0.0)
    weights, info = weights_now()
    if weigh_share:
        ctx.progress("influence", weigh_share)
        ctx = ctx.sub_progress(weigh_share)
    loop = AscentLoop(
        ctx,
        plan,
        weights,
        reweight=(lambda: weights_now()[0]) if recompute else None,
        objective=objective,
    )
    report = loop.run()
    # The loop reports θ itself; the weights' own entries follow it.
    report.update({k: v for k, v in info.items() if k != "target_params"})
    if recompute:
        report["n_selected_per_epoch"] = history
    return MethodOutcome(ctx.model, report)
