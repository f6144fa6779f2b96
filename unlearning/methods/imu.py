"""IMU (Influence-guided Machine Unlearning, Fan et al. 2025) and the weighted-ascent loop it shares with GA.

Official recipe (``goodluckisallyouneed/IMU``, ``Classification/unlearn/IMU.py`` ``IMU`` and
``compute_combined_loss``, ``unlearn/impl.py`` ``_iterative_unlearn_impl``, ``arg_parser.py``):
θ = last linear layer only; per batch of the selected samples L = −Σ w_i·CE_i / Σ w_i + α‖θ‖₁ with α = 0.2;
SGD lr 0.01, momentum 0.9, weight decay 5e-4; 10 epochs of batch 256 (shuffled); MultiStepLR with the
default ``--decreasing_lr 91,136`` and γ = 0.1 (so the rate is constant over 10 epochs); weights
computed once at epoch 0. ``imu`` with no params runs exactly that.

Deviations, all deliberate: the forward runs in eval mode (the official code calls ``model.train()``)
so that only θ changes — BatchNorm statistics and dropout stay as in the registered model.

Options beyond the paper, for a service that must forget without hand-tuning:

* ``lr_mode="relative"``: the ascent gradient is rescaled to ‖θ‖/‖∇‖, so every step moves θ by
  ``lr``·‖θ‖ whatever the gradient scale. On memorised samples CE ≈ 0 and the raw gradient vanishes
  (the official 10 epochs change nothing on a memorising MLP); the relative step does not.
* ``alpha_mode="mean"``: α·‖θ‖₁/P instead of α·‖θ‖₁, so α means the same for any layer width
  (α = 0.2 on the sum collapses a small MLP).
* ``early_stop``: ``"eval_accuracy"`` stops once forget accuracy ≤ eval accuracy,
  ``"forget_accuracy"`` once forget accuracy ≤ ``forget_accuracy_target``, ``"mia"`` once the
  loss-MIA AUC forget-vs-eval ≤ ``mia_target``; ``"auto"`` = ``"forget_accuracy"`` for
  ``scope="class"``, else ``"eval_accuracy"`` when an eval set is given, else none. Checked before the
  first step and after every epoch (or every ``check_every`` steps), at most ``max_epochs`` epochs.
* ``recompute="epoch"``: recompute influences and weights on the current model every epoch.

* ``max_eval_drop`` (with early stopping and an eval set): a utility guard — once eval accuracy falls
  more than this below its starting value, θ goes back to the last check within the limit and the
  loop stops (``stop_reason="max_eval_drop"``): the most forgetting the utility budget allows. (The
  adaptive step schedule, below, goes on with smaller steps instead of stopping at once.)

* ``step_schedule="adaptive"`` (with early stopping; the preset's choice): a bold-driver /
  backtracking rule on the step size, decided at every check. While nothing has gone wrong, a check
  that keeps the guard and has not reached the target accepts θ and multiplies the step by
  ``lr_grow`` (2, at most ``max_lr``). A check that trips the guard, or reaches the target with a
  step larger than ``lr`` (an overshoot), sends θ back to the last accepted check, and from then on
  every check multiplies the step by ``lr_shrink`` (0.5): a bisection of the rejected step. So the
  guard no longer ends the ascent at its first trip — the loop goes on towards the guard's boundary
  and stops with ``"max_eval_drop"`` only when the step would fall below ``min_lr`` — and the target
  is met with a last step of at most ``lr``, the precision of the constant schedule, in far fewer
  steps (on the digits MLP, class forgetting: ~10 steps instead of ~27). Momentum buffers are
  cleared at every backtrack; the ``milestones`` decay does not apply. ``"constant"`` (the default
  outside the preset) is the fixed rate with the ``milestones`` decay and a stop at the first guard
  trip. Without early stopping there are no checks and the schedule is constant. The report gives
  ``step_schedule`` (as run), ``steps`` (every step taken, backtracked ones included), ``checks``,
  ``backtracks`` (θ sent back, the constant schedule's final guard stop included) and
  ``final_step_size`` (the rate of the last step: a fraction of ‖θ‖ with ``lr_mode="relative"``).

* ``scope="class"``: the forget set is all training data of one or more classes (those of its
  labels). A model retrained without a class never predicts it: on sklearn digits (MLP and LeNet,
  each of the 10 classes) the retrained model's accuracy on the forgotten class is exactly 0.000, on
  its training and its test samples alike. So "forget accuracy ≤ eval accuracy" is the wrong rule
  there (it stops at forget accuracy ≈ 0.96 on digits); the target is forget accuracy ≤
  ``forget_accuracy_target``, default 0.0 (what retraining gives; 1/num_classes would leave a 0.1 gap
  to it). Eval samples of the forgotten classes are *supposed* to lose accuracy, so the guard and the
  eval metrics of the checks use only the other classes' eval samples; the MIA AUC of the checks
  compares the forget set with the forgotten classes' eval samples (the retrained model treats both
  as unseen data of a class it never learned), and is absent when the eval set has none of them.
  The report gives ``forgotten_classes`` and ``n_eval_excluded``.

* ``cache_features`` (default on): when θ is exactly a final ``nn.Linear`` whose output is the model
  output (the check of the closed-form influence path), the forward runs in eval mode and θ is the
  last operation, so the head's input features of the forget and eval sets never change during the
  ascent. They are computed once and every step and check runs on the head alone — same result as
  the full forward to float tolerance. Falls back to the full forward otherwise (another target, a
  tied or reused head, features above ``FEATURE_CACHE_MAX_ELEMENTS``); ``features_cached`` in the
  report says which path ran.

Preset ``{"preset": "adaptive"}`` (the service default): relative steps starting at 0.5% of ‖θ‖ under
the adaptive step schedule (at most 8%, bisection down to 0.25%), no momentum, no L1, early stop
"auto", at most 100 epochs, ``max_eval_drop`` 0.05; any explicit param overrides a preset value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unlearning.batching import iterate_batches
from unlearning.errors import ParamsError
from unlearning.gradients import GradMethod
from unlearning.influence import imu_sample_weights
from unlearning.losses import logits, loss_from_logits
from unlearning.methods.base import (
    MethodParams,
    check_cancel,
    check_finite_loss,
    register_method,
)
from unlearning.samples import infer_task, num_samples, take
from unlearning.targets import ClosedFormNotApplicable, resolve_target, target_params
from unlearning.targets import forward_capture as _forward_capture
from unlearning.targets import head_for as _head_for
from unlearning.types import CancelFn, Dataset, ProgressFn, UnlearnResult
from unlearning.verification import mia_auc, per_sample_metrics

PRESETS: dict[str, dict[str, Any]] = {
    "official": {},
    "adaptive": {
        "lr_mode": "relative",
        "lr": 0.005,
        "momentum": 0.0,
        "alpha": 0.0,
        "early_stop": "auto",
        "max_epochs": 100,
        "max_eval_drop": 0.05,
        "step_schedule": "adaptive",
        "max_lr": 0.08,
        "min_lr": 0.0025,
    },
}

# What a model retrained without the class scores on it (0.000 on digits, MLP and LeNet, every class).
CLASS_FORGET_ACCURACY_TARGET = 0.0

# Bound on cached head-input elements (forget + eval sets; 1 GiB in float32); above it the ascent
# keeps running full forward passes rather than risk device memory on a long-sequence LM.
FEATURE_CACHE_MAX_ELEMENTS = 1 << 28
# Batch of the one caching forward pass: the same size as the checks' batches (``measure``).
FEATURE_BATCH_SIZE = 1024


class AscentParams(MethodParams):
    """Parameters of the weighted gradient-ascent loop (shared by ``imu`` and ``ga``)."""

    preset: Literal["official", "adaptive"] = "official"
    target: str | list[str] | None = None  # None = last nn.Linear; "all"; names, module names, globs, regexes
    alpha: float = Field(0.2, ge=0, le=1e3)
    alpha_mode: Literal["sum", "mean"] = "sum"
    lr: float = Field(0.01, gt=0, le=1e3)
    lr_mode: Literal["fixed", "relative"] = "fixed"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    milestones: list[int] = Field(default_factory=lambda: [91, 136])
    gamma: float = Field(0.1, gt=0, le=1)
    early_stop: Literal["auto", "eval_accuracy", "forget_accuracy", "mia"] | None = None
    mia_target: float = Field(0.55, ge=0, le=1)
    # None: CLASS_FORGET_ACCURACY_TARGET with scope "class"; with scope "samples" it has no default
    # (the sound sample-level target is the eval accuracy, i.e. early_stop="eval_accuracy").
    forget_accuracy_target: float | None = Field(None, ge=0, le=1)
    scope: Literal["samples", "class"] = "samples"
    check_every: int | None = Field(None, ge=1)
    max_epochs: int = Field(100, ge=1, le=100_000)
    max_eval_drop: float | None = Field(None, ge=0, le=1)
    cache_features: bool = True
    step_schedule: Literal["constant", "adaptive"] = "constant"
    # Bounds of the adaptive schedule in the units of lr (a fraction of ‖θ‖ when relative); None: 16·lr
    # and lr/2. max_lr below lr counts as lr.
    max_lr: float | None = Field(None, gt=0, le=1e3)
    min_lr: float | None = Field(None, gt=0, le=1e3)
    lr_grow: float = Field(2.0, ge=1, le=100)
    lr_shrink: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        # Preset values are defaults: whatever the caller sets explicitly wins.
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="before")
    @classmethod
    def _class_target(cls, data: Any) -> Any:
        # Filled in here, not at run time, so the resolved params in the report show the target used.
        if (
            isinstance(data, dict)
            and data.get("scope") == "class"
            and data.get("forget_accuracy_target") is None
        ):
            return {**data, "forget_accuracy_target": CLASS_FORGET_ACCURACY_TARGET}
        return data


class IMUParams(AscentParams):
    top_fraction: float = Field(0.1, gt=0, le=1)
    clip_quantile: float = Field(0.93, ge=0, le=1)
    fisher_lambda: float = Field(0.01, gt=0)
    recompute: Literal["never", "epoch"] = "never"
    influence_method: GradMethod = "auto"
    chunk_size: int = Field(64, ge=1, le=1_000_000)


def _early_stop_mode(params: AscentParams, eval: Dataset | None) -> str | None:
    """The stopping rule; raises ParamsError for a combination that cannot run (before any work)."""
    mode = params.early_stop
    if mode == "auto":
        if params.scope == "class":
            mode = "forget_accuracy"
        else:
            return "eval_accuracy" if eval is not None else None
    if mode in ("eval_accuracy", "mia") and eval is None:
        raise ParamsError(f"early_stop={mode!r} needs an eval set")
    if mode == "forget_accuracy" and params.forget_accuracy_target is None:
        raise ParamsError('early_stop="forget_accuracy" needs forget_accuracy_target (or scope="class")')
    return mode


def split_by_class(forget: Dataset, eval: Dataset | None) -> tuple[list[int], Dataset | None, Dataset | None]:
    """(forgotten classes, eval samples of the other classes, eval samples of the forgotten classes).

    The forgotten classes are the labels of the forget set; an empty part of the eval set is None.
    """
    if "labels" not in forget or infer_task(forget) != "classification":
        raise ParamsError('scope="class" needs a classification forget set with labels')
    classes = torch.unique(forget["labels"])
    if eval is None:
        return classes.tolist(), None, None
    forgotten = torch.isin(eval["labels"], classes.to(eval["labels"].device))
    kept, gone = take(eval, ~forgotten), take(eval, forgotten)
    return classes.tolist(), kept if num_samples(kept) else None, gone if num_samples(gone) else None


def plan_checks(
    params: AscentParams, forget: Dataset, eval: Dataset | None
) -> tuple[str | None, list[int] | None, Dataset | None, Dataset | None]:
    """(stopping rule, forgotten classes, eval set of the utility guard, eval set of the MIA AUC).

    Raises ParamsError for a combination that cannot run; methods call it before any work.
    """
    mode = _early_stop_mode(params, eval)
    if params.scope == "samples":
        return mode, None, eval, eval
    classes, utility, unseen = split_by_class(forget, eval)
    if mode == "eval_accuracy" and utility is None:
        raise ParamsError(
            'early_stop="eval_accuracy" with scope="class" needs eval samples of classes not forgotten'
        )
    if mode == "mia" and unseen is None:
        raise ParamsError('early_stop="mia" with scope="class" needs eval samples of the forgotten classes')
    return mode, classes, utility, unseen


def _join(sets: list[Dataset]) -> Dataset | None:
    """The sets concatenated, or None when their keys, dtypes or per-sample shapes differ."""
    first = sets[0]
    for d in sets[1:]:
        if set(d) != set(first) or any(
            d[k].shape[1:] != first[k].shape[1:] or d[k].dtype != first[k].dtype for k in first
        ):
            return None
    return {k: torch.cat([d[k] for d in sets]) for k in first} if len(sets) > 1 else dict(first)


class _HeadOnFeatures(nn.Module):
    """The head applied to cached features; takes (and ignores) the attention mask like the model."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head
        self.eval()  # measure() restores the mode it finds: it must find eval mode, as the model's

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(features)


def _cache_features(
    model: nn.Module, names: list[str], sets: list[Dataset | None], device: torch.device
) -> tuple[nn.Module, list[Dataset | None]]:
    """The head as a model and each data set with its input replaced by the head's input features.

    The feature sets keep the key tasks.py dispatches on ("inputs" / "input_ids") and every other
    tensor (labels, attention mask), so loss, targets, masks and accuracy go through the same code as
    with the full model. A causal LM gets explicit labels because its targets are read from
    ``input_ids`` when labels are absent. Raises ClosedFormNotApplicable when caching does not apply.
    """
    head, _, _ = _head_for(model, names)
    # One feature row per sample, or per token for a causal LM.
    rows = sum(d["input_ids"].numel() if "input_ids" in d else num_samples(d) for d in sets if d is not None)
    if rows * head.in_features > FEATURE_CACHE_MAX_ELEMENTS:
        raise ClosedFormNotApplicable("the head's input features are too large to cache")
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    out: list[Dataset | None] = []
    handle = head.register_forward_pre_hook(count)
    try:
        with torch.no_grad():
            for data in sets:
                if data is None:
                    out.append(None)
                    continue
                key = "input_ids" if "input_ids" in data else "inputs"
                feats = []
                # The forward still builds [B, T, V] logits for an LM: the budget in tasks.py bounds B.
                batches = iterate_batches(
                    data, FEATURE_BATCH_SIZE, device=device, num_outputs=head.out_features
                )
                for batch in batches:
                    calls[0] = 0
                    feats.append(_forward_capture(model, head, batch)[1])
                    if calls[0] != 1:
                        # Applied twice, the head's input would depend on θ through the first call.
                        raise ClosedFormNotApplicable("the head runs more than once per forward pass")
                cached = {k: v.to(device) for k, v in data.items()}
                if key == "input_ids" and "labels" not in cached:
                    cached["labels"] = cached["input_ids"]
                cached[key] = torch.cat(feats)
                out.append(cached)
    finally:
        handle.remove()
    return _HeadOnFeatures(head), out


def run_ascent(
    model: torch.nn.Module,
    forget: Dataset,
    weights: torch.Tensor,
    params: AscentParams,
    *,
    eval: Dataset | None,
    device: torch.device,
    seed: int,
    progress: ProgressFn,
    should_cancel: CancelFn,
    reweight: Callable[[], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Weighted gradient ascent on θ over the samples with weight > 0; returns report entries."""
    task = infer_task(forget)
    # The checks' eval sets: the guard and eval metrics use `utility`, the MIA AUC compares with `unseen`.
    mode, classes, utility, unseen = plan_checks(params, forget, eval)
    names = resolve_target(model, params.target)
    out: dict[str, Any] = {
        "early_stop": mode,
        "scope": params.scope,
        "target_params": names,
        "epochs_run": 0,
        "steps": 0,
    }
    if classes is not None:
        out["forgotten_classes"] = classes
        out["n_eval_excluded"] = num_samples(unseen) if unseen is not None else 0
    if mode == "forget_accuracy":
        out["forget_accuracy_target"] = params.forget_accuracy_target
    theta = target_params(model, names)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in theta:
        p.requires_grad_(True)
    model.eval()

    # The model the steps and checks run, and the data sets it reads (features when cached).
    net, f_set, u_set, x_set = model, forget, utility, unseen
    out["features_cached"] = False
    if params.cache_features:
        try:
            net, cached = _cache_features(
                model, names, [forget, utility, unseen if unseen is not utility else None], device
            )
            f_set, u_set = cached[0], cached[1]
            x_set = u_set if unseen is utility else cached[2]
            out["features_cached"] = True
        except ClosedFormNotApplicable as exc:
            out["feature_cache_skipped"] = str(exc)

    n_theta = sum(p.numel() for p in theta)
    l1_coef = params.alpha if params.alpha_mode == "sum" else params.alpha / n_theta
    opt = torch.optim.SGD(theta, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=params.milestones, gamma=params.gamma)
    gen = torch.Generator().manual_seed(seed)
    max_epochs = params.max_epochs if mode else params.epochs
    last: dict[str, float] = {}

    guard = params.max_eval_drop if mode and u_set is not None else None
    base_eval: list[float] = []
    safe = [p.detach().clone() for p in theta]  # θ at the last accepted check (within the guard)

    # The step schedule: "adaptive" decides the rate at every check, so it needs checks (a stopping rule).
    adaptive = params.step_schedule == "adaptive" and mode is not None
    out["step_schedule"] = "adaptive" if adaptive else "constant"
    base_lr = params.lr
    max_lr = max(params.max_lr if params.max_lr is not None else 16 * base_lr, base_lr)
    min_lr = params.min_lr if params.min_lr is not None else base_lr / 2
    # Loop state shared with the checks: the rate of the schedule and the report's counters.
    state: dict[str, Any] = {
        "lr": base_lr,  # the rate of the next step
        "refine": False,  # after the first backtrack: halve the rate at every check
        "tripped": False,  # the guard has tripped: the bisection may go below lr, down to min_lr
        "rejected": None,  # the last check sent back by the guard (and its losses, for the MIA AUC)
        "checks": 0,
        "backtracks": 0,
        "since_safe": 0,  # steps since the last accepted check
    }

    # Every check evaluates forget, utility and unseen sets; joined into one set they take one pass
    # (one head product when features are cached) instead of three.
    parts = [d for d in (f_set, u_set, x_set if x_set is not u_set else None) if d is not None]
    joined = _join(parts)
    sizes = [num_samples(d) for d in parts]
    # The MIA AUC (a rank statistic: a sort per check) is computed only where it decides (mode "mia")
    # or is reported (the accepted and the rejected check): its losses are kept until then.
    last_losses: list[tuple[torch.Tensor, torch.Tensor]] = []

    def with_mia(res: dict[str, float], losses: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
        if losses is not None and "mia_auc" not in res:
            res = dict(res)
            res["mia_auc"] = mia_auc(*losses)
            if params.scope == "class":  # keep the key order of a full check
                res["forgotten_classes_eval_accuracy"] = res.pop("forgotten_classes_eval_accuracy")
        return res

    def check() -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
        state["checks"] += 1
        if joined is not None:
            ls, cs = per_sample_metrics(net, joined, task=task, device=device)
            pairs = list(zip(ls.split(sizes), cs.split(sizes), strict=True))
        else:
            pairs = [per_sample_metrics(net, d, task=task, device=device) for d in parts]
        (fl, fc), rest = pairs[0], pairs[1:]
        res = {"forget_accuracy": float(fc.double().mean()), "forget_loss": float(fl.double().mean())}
        if u_set is not None:
            el, ec = rest[0]
            res["eval_accuracy"], res["eval_loss"] = float(ec.double().mean()), float(el.double().mean())
        losses = None
        if x_set is not None:
            xl, xc = rest[-1]  # the utility set itself in the samples scope
            losses = (fl, xl)
            if mode == "mia":
                res["mia_auc"] = mia_auc(fl, xl)
            if params.scope == "class":
                res["forgotten_classes_eval_accuracy"] = float(xc.double().mean())
        return res, losses

    def is_reached(now: dict[str, float]) -> bool:
        if mode == "eval_accuracy":
            return now["forget_accuracy"] <= now["eval_accuracy"]
        if mode == "forget_accuracy":
            return now["forget_accuracy"] <= params.forget_accuracy_target
        return now["mia_auc"] <= params.mia_target

    def back_to_safe() -> None:
        with torch.no_grad():
            for p, q in zip(theta, safe, strict=True):
                p.copy_(q)
        opt.state.clear()  # momentum of the rejected steps must not carry on
        state["backtracks"] += 1
        state["since_safe"] = 0

    def target_reached() -> bool:
        """One check: accept θ or send it back; True when the loop should stop."""
        now, losses = check()
        tripped = False
        if guard is not None:
            if not base_eval:
                base_eval.append(now["eval_accuracy"])
            tripped = now["eval_accuracy"] < base_eval[0] - guard
        reached = not tripped and is_reached(now)
        step = state["lr"]
        if adaptive and state["since_safe"] > 0 and (tripped or (reached and step > base_lr)):
            # Past the guard, or the target met with a step coarser than lr: back to the last accepted
            # θ, and from now on every check halves the step (a bisection of the last step).
            back_to_safe()
            state["refine"] = True
            state["tripped"] = state["tripped"] or tripped
            return next_step(step, now if tripped else None, losses)
        if tripped:
            # Utility guard: go back to the last θ within the allowed eval-accuracy drop and stop;
            # last_check stays that θ's check, the rejected one is reported beside it.
            back_to_safe()
            out["stop_reason"] = "max_eval_drop"
            out["rejected_check"] = with_mia(now, losses)
            return True
        if guard is not None or adaptive:
            for p, q in zip(theta, safe, strict=True):
                q.copy_(p.detach())
        state["since_safe"] = 0
        last.clear()
        last.update(now)
        last_losses[:] = [losses] if losses is not None else []
        if reached:
            out["stop_reason"] = "target_reached"
            return True
        if adaptive and state["checks"] > 1:
            if state["refine"]:
                return next_step(step, None, None)
            state["lr"] = min(step * params.lr_grow, max_lr)
        return False

    def next_step(step: float, rejected: dict[str, float] | None, losses: Any) -> bool:
        """The bisection's next rate; True (stop) once the guard's boundary is located within min_lr."""
        if rejected is not None:
            state["rejected"] = (rejected, losses)
        if not state["tripped"]:
            state["lr"] = max(step * params.lr_shrink, base_lr)  # the target alone: precision lr
            return False
        if step * params.lr_shrink >= min_lr:
            state["lr"] = step * params.lr_shrink
            return False
        out["stop_reason"] = "max_eval_drop"
        if state["rejected"] is not None:
            out["rejected_check"] = with_mia(*state["rejected"])
        return True

    stopped = bool(mode) and target_reached()
    step = 0
    epoch = 0
    subset: Dataset | None = None
    for epoch in range(max_epochs):
        if stopped:
            break
        if epoch > 0 and reweight is not None:
            weights = reweight()
            subset = None
        if subset is None:
            selected = torch.nonzero(weights > 0).squeeze(1)
            if selected.numel() == 0:
                out["note"] = "no sample selected: nothing to ascend on"
                break
            subset = take(f_set, selected)
            subset["__weight__"] = weights[selected].float()
        for batch in iterate_batches(subset, params.batch_size, shuffle=True, generator=gen, device=device):
            check_cancel(should_cancel)
            w = batch.pop("__weight__")
            ce = loss_from_logits(logits(net, batch), batch, task)
            ascent = -(w * ce).sum() / w.sum()
            check_finite_loss(ascent, f"epoch {epoch}, step {step}")
            # A parameter of θ outside the forward (target "all" on a model with unused parameters) gets
            # no gradient: SGD then skips it (no weight decay either), as after a plain backward().
            grads = torch.autograd.grad(ascent, theta, allow_unused=True)
            scale = 1.0
            if params.lr_mode == "relative":
                # float64: the gradient of memorised samples is tiny and its square underflows float32.
                g_norm = torch.linalg.vector_norm(
                    torch.cat([g.reshape(-1) for g in grads if g is not None]), dtype=torch.float64
                )
                t_norm = torch.linalg.vector_norm(
                    torch.cat([p.detach().reshape(-1) for p in theta]), dtype=torch.float64
                )
                scale = float(t_norm / g_norm.clamp_min(1e-30))
            # d/dθ of α‖θ‖₁ is α·sign(θ); it is added after the rescaling so α keeps its meaning.
            for p, g in zip(theta, grads, strict=True):
                d = None if g is None else g * scale
                if l1_coef:
                    l1 = l1_coef * torch.sign(p.detach())
                    d = l1 if d is None else d + l1
                p.grad = d
            if adaptive:
                for group in opt.param_groups:
                    group["lr"] = state["lr"]
            opt.step()
            step += 1
            state["since_safe"] += 1
            if mode and params.check_every and step % params.check_every == 0 and target_reached():
                stopped = True
                break
        if not adaptive:
            sched.step()
        out["epochs_run"] = epoch + 1
        if mode and not stopped and not params.check_every:
            stopped = target_reached()
        progress("unlearn", (epoch + 1) / max_epochs)
    for p in model.parameters():
        p.requires_grad_(True)
    out["steps"] = step
    out["checks"] = state["checks"]
    out["backtracks"] = state["backtracks"]
    out["stopped_early"] = bool(mode) and stopped
    if mode:
        out["target_reached"] = out.get("stop_reason") == "target_reached"
        out["last_check"] = with_mia(last, last_losses[0] if last_losses else None)
    out["final_lr"] = state["lr"] if adaptive else opt.param_groups[0]["lr"]
    out["final_step_size"] = out["final_lr"]
    return out


@register_method("imu", params=IMUParams)
def unlearn(
    model: torch.nn.Module,
    forget: Dataset,
    params: IMUParams,
    *,
    eval: Dataset | None,
    retain: Dataset | None,
    device: torch.device,
    seed: int,
    progress: ProgressFn,
    should_cancel: CancelFn,
) -> UnlearnResult:
    """Influence-guided unlearning: gradient ascent on the last layer, weighted by each sample's influence."""
    plan_checks(params, forget, eval)  # fail on params that cannot run before any work
    history: list[int] = []

    def weigh() -> tuple[torch.Tensor, dict[str, Any]]:
        check_cancel(should_cancel)
        w, info = imu_sample_weights(
            model,
            forget,
            target=params.target,
            top_fraction=params.top_fraction,
            clip_quantile=params.clip_quantile,
            fisher_lambda=params.fisher_lambda,
            method=params.influence_method,
            chunk_size=params.chunk_size,
            device=device,
        )
        history.append(info["n_selected"])
        return w, info

    progress("influence", 0.0)
    weights, info = weigh()
    progress("influence", 0.1)
    report = run_ascent(
        model,
        forget,
        weights,
        params,
        eval=eval,
        device=device,
        seed=seed,
        progress=lambda stage, f: progress(stage, 0.1 + 0.9 * f),
        should_cancel=should_cancel,
        reweight=(lambda: weigh()[0]) if params.recompute == "epoch" else None,
    )
    report.update({k: v for k, v in info.items() if k != "target_params"})
    if params.recompute == "epoch":
        report["n_selected_per_epoch"] = history
    return UnlearnResult(model, report)
