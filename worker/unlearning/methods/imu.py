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
* ``early_stop``: ``"eval_accuracy"`` stops once forget accuracy ≤ eval accuracy, ``"mia"`` once
  the loss-MIA AUC forget-vs-eval ≤ ``mia_target``, ``"auto"`` = eval_accuracy when an eval set is
  given, else none; checked before the first step and after every epoch (or every ``check_every``
  steps), at most ``max_epochs`` epochs.
* ``recompute="epoch"``: recompute influences and weights on the current model every epoch.

* ``max_eval_drop`` (with early stopping): a utility guard — once eval accuracy falls more than this
  below its starting value, θ goes back to the last check within the limit and the loop stops
  (``stop_reason="max_eval_drop"``): the most forgetting the utility budget allows.

Preset ``{"preset": "adaptive"}`` (the service default): relative steps of 0.5% of ‖θ‖, no momentum,
no L1, early stop "auto", at most 100 epochs, ``max_eval_drop`` 0.05; any explicit param overrides
a preset value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from worker.unlearning.errors import ParamsError
from worker.unlearning.influence import GradMethod, imu_sample_weights, resolve_target, target_params
from worker.unlearning.methods.base import (
    MethodParams,
    check_cancel,
    check_finite_loss,
    register_method,
)
from worker.unlearning.tasks import infer_task, iterate_batches, logits, loss_from_logits, take
from worker.unlearning.types import CancelFn, Dataset, ProgressFn, UnlearnResult
from worker.unlearning.verification import measure

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
    },
}


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
    early_stop: Literal["auto", "eval_accuracy", "mia"] | None = None
    mia_target: float = Field(0.55, ge=0, le=1)
    check_every: int | None = Field(None, ge=1)
    max_epochs: int = Field(100, ge=1, le=100_000)
    max_eval_drop: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        # Preset values are defaults: whatever the caller sets explicitly wins.
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data


class IMUParams(AscentParams):
    top_fraction: float = Field(0.1, gt=0, le=1)
    clip_quantile: float = Field(0.93, ge=0, le=1)
    fisher_lambda: float = Field(0.01, gt=0)
    recompute: Literal["never", "epoch"] = "never"
    influence_method: GradMethod = "auto"
    chunk_size: int = Field(64, ge=1, le=1_000_000)


def _early_stop_mode(params: AscentParams, eval: Dataset | None) -> str | None:
    mode = params.early_stop
    if mode == "auto":
        return "eval_accuracy" if eval is not None else None
    if mode is not None and eval is None:
        raise ParamsError(f"early_stop={mode!r} needs an eval set")
    return mode


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
    mode = _early_stop_mode(params, eval)
    names = resolve_target(model, params.target)
    theta = target_params(model, names)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in theta:
        p.requires_grad_(True)
    model.eval()
    n_theta = sum(p.numel() for p in theta)
    l1_coef = params.alpha if params.alpha_mode == "sum" else params.alpha / n_theta
    opt = torch.optim.SGD(theta, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=params.milestones, gamma=params.gamma)
    gen = torch.Generator().manual_seed(seed)
    max_epochs = params.max_epochs if mode else params.epochs
    last: dict[str, float] = {}

    guard = params.max_eval_drop if mode else None
    base_eval: list[float] = []
    safe = [p.detach().clone() for p in theta]  # θ at the last check that kept eval accuracy within the guard
    out: dict[str, Any] = {"early_stop": mode, "target_params": names, "epochs_run": 0, "steps": 0}

    def target_reached() -> bool:
        last.clear()
        last.update(measure(model, forget, eval, task=task, device=device))
        if guard is not None:
            if not base_eval:
                base_eval.append(last["eval_accuracy"])
            if last["eval_accuracy"] < base_eval[0] - guard:
                # Utility guard: go back to the last θ within the allowed eval-accuracy drop and stop.
                with torch.no_grad():
                    for p, q in zip(theta, safe, strict=True):
                        p.copy_(q)
                out["stop_reason"] = "max_eval_drop"
                return True
            for p, q in zip(theta, safe, strict=True):
                q.copy_(p.detach())
        if mode == "eval_accuracy":
            reached = last["forget_accuracy"] <= last["eval_accuracy"]
        else:
            reached = last["mia_auc"] <= params.mia_target
        if reached:
            out["stop_reason"] = "target_reached"
        return reached

    stopped = bool(mode) and target_reached()
    step = 0
    epoch = 0
    for epoch in range(max_epochs):
        if stopped:
            break
        if epoch > 0 and reweight is not None:
            weights = reweight()
        selected = torch.nonzero(weights > 0).squeeze(1)
        if selected.numel() == 0:
            out["note"] = "no sample selected: nothing to ascend on"
            break
        subset = take(forget, selected)
        subset["__weight__"] = weights[selected].float()
        for batch in iterate_batches(subset, params.batch_size, shuffle=True, generator=gen, device=device):
            check_cancel(should_cancel)
            w = batch.pop("__weight__")
            ce = loss_from_logits(logits(model, batch), batch, task)
            ascent = -(w * ce).sum() / w.sum()
            check_finite_loss(ascent, f"epoch {epoch}, step {step}")
            grads = torch.autograd.grad(ascent, theta)
            scale = 1.0
            if params.lr_mode == "relative":
                g_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
                t_norm = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in theta))
                scale = float(t_norm / g_norm.clamp_min(1e-30))
            # d/dθ of α‖θ‖₁ is α·sign(θ); it is added after the rescaling so α keeps its meaning.
            for p, g in zip(theta, grads, strict=True):
                p.grad = g * scale + l1_coef * torch.sign(p.detach())
            opt.step()
            step += 1
            if mode and params.check_every and step % params.check_every == 0 and target_reached():
                stopped = True
                break
        sched.step()
        out["epochs_run"] = epoch + 1
        if mode and not stopped and not params.check_every:
            stopped = target_reached()
        progress("unlearn", (epoch + 1) / max_epochs)
    for p in model.parameters():
        p.requires_grad_(True)
    out["steps"] = step
    out["stopped_early"] = bool(mode) and stopped
    if mode:
        out["target_reached"] = out.get("stop_reason") == "target_reached"
        out["last_check"] = dict(last)
    out["final_lr"] = opt.param_groups[0]["lr"]
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
    _early_stop_mode(params, eval)  # fail on a missing eval set before any work
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
