"""IMU steps 1–5: diagonal Fisher, influence, selection and weights from per-sample gradients.

Matches the official code, ``goodluckisallyouneed/IMU``:
``Classification/unlearn/IMU.py`` (``compute_fisher_matrix_from_dataset``, ``compute_influence_weights``
and the selection block of ``IMU``) and ``synthetic/unlearn_IMU.py`` (``select_top_negative_influence``):

* g_i = ∇θ loss_i on one sample, model in eval mode; θ = the last linear layer;
* F = mean_i g_i² + 0.01, I_i = −(g_i ⊙ F⁻¹) · ḡ with ḡ = mean_i g_i;
* keep I_i < 0; of those the top ``max(int(n_negative · top_fraction), 1)`` by |I_i|
  (the fraction is of the negative ones, truncated, at least one);
* w_i = sqrt(|I_i|), clamped from above at ``torch.quantile(w, 0.93)`` of the selected weights.

Where the g_i come from (closed form, torch.func, the official loop) is :mod:`unlearning.gradients`;
which parameters θ are is :mod:`unlearning.targets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unlearning.batching import device_of
from unlearning.errors import ParamsError
from unlearning.gradients import GradientSource, GradMethod, per_sample_gradients, with_gradients
from unlearning.samples import infer_task, num_samples
from unlearning.targets import Target, resolve_target
from unlearning.types import Dataset, Task

__all__ = [
    "GradMethod",
    "InfluenceResult",
    "Target",
    "imu_sample_weights",
    "influence_scores",
    "per_sample_gradients",
    "resolve_target",
    "select_weights",
]


@dataclass
class InfluenceResult:
    influence: torch.Tensor  # [N], on CPU
    fisher: torch.Tensor  # [P] diagonal Fisher including λ, θ flattened in target order
    mean_grad: torch.Tensor  # [P]
    param_names: list[str]
    path: str  # "closed_form" | "func" | "loop"


def influence_from(source: GradientSource, n: int, fisher_lambda: float) -> InfluenceResult:
    """F = Σg²/N + λ, ḡ = Σg/N and I_i = −g_i · (ḡ ⊙ F⁻¹), in the source's own layout."""
    f_sum, g_sum = source.moments()
    fisher = f_sum / n + fisher_lambda
    mean_grad = g_sum / n
    infl = -source.dots(mean_grad / fisher)
    return InfluenceResult(
        influence=infl.float().cpu(),
        fisher=source.flatten(fisher).cpu(),
        mean_grad=source.flatten(mean_grad).cpu(),
        param_names=source.names,
        path=source.path,
    )


def influence_scores(
    model: nn.Module,
    data: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    fisher_lambda: float = 0.01,
    method: GradMethod = "auto",
    chunk_size: int = 64,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> InfluenceResult:
    """IMU steps 1–3: influence I_i = −(g_i ⊙ F⁻¹)·ḡ of every sample of ``data`` on θ.

    ``auto`` takes the closed form when θ is a final linear layer (not tied) whose output is the
    model output, else torch.func. ``batch_size`` (forward passes) and ``chunk_size`` (torch.func
    samples per vmap) are upper bounds: a causal LM's batches shrink to keep their logits within
    ``budgets.MAX_LOGIT_ELEMENTS``, and torch.func chunks to keep [c, P] within
    ``budgets.MAX_CHUNK_ELEMENTS``.
    """
    task = task or infer_task(data)
    names = resolve_target(model, target)
    dev = device_of(model, device)
    n = num_samples(data)
    if n == 0:
        raise ParamsError("the forget set is empty")
    return with_gradients(
        model,
        data,
        task,
        names,
        lambda source: influence_from(source, n, fisher_lambda),
        method=method,
        chunk_size=chunk_size,
        batch_size=batch_size,
        device=dev,
    )


def select_weights(
    influence: torch.Tensor, top_fraction: float = 0.1, clip_quantile: float = 0.93
) -> tuple[torch.Tensor, torch.Tensor]:
    """IMU steps 4–5: weights [N] (zero where not selected) and the selected indices, largest |I| first."""
    n = influence.shape[0]
    weights = torch.zeros(n, dtype=torch.float32)
    neg = torch.nonzero(influence < 0).squeeze(1)
    if neg.numel() == 0:
        return weights, neg
    k = max(int(neg.numel() * top_fraction), 1)  # official: fraction of the negative ones, truncated
    order = torch.argsort(influence[neg].abs(), descending=True, stable=True)[:k]
    selected = neg[order]
    w = influence[selected].abs().sqrt().float()
    w = w.clamp(max=torch.quantile(w, clip_quantile))
    weights[selected] = w
    return weights, selected


def imu_sample_weights(
    model: nn.Module,
    forget: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    top_fraction: float = 0.1,
    clip_quantile: float = 0.93,
    fisher_lambda: float = 0.01,
    method: GradMethod = "auto",
    chunk_size: int = 64,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """IMU steps 1–5 on the forget set: per-sample weights [N] (zeros for unselected) and info."""
    res = influence_scores(
        model,
        forget,
        task,
        target=target,
        fisher_lambda=fisher_lambda,
        method=method,
        chunk_size=chunk_size,
        batch_size=batch_size,
        device=device,
    )
    weights, selected = select_weights(res.influence, top_fraction, clip_quantile)
    infl = res.influence.double()
    info: dict[str, Any] = {
        "n_samples": int(infl.numel()),
        "n_negative": int((infl < 0).sum()),
        "n_selected": int(selected.numel()),
        "influence_path": res.path,
        "target_params": res.param_names,
        "influence_min": float(infl.min()),
        "influence_max": float(infl.max()),
        "influence_mean": float(infl.mean()),
        "weight_max": float(weights.max()) if selected.numel() else 0.0,
    }
    return weights, info
