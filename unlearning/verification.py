"""Verification metrics: accuracy/loss, loss-based membership inference AUC, parameter change,
and the comparisons with a retrained reference model used in the unlearning literature
(Avg Gap as in SalUn, Fan et al. 2024; Tug-of-War, Zhao et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from unlearning.batching import device_of, iterate_batches
from unlearning.budgets import output_size
from unlearning.losses import correct_from_logits, logits, loss_from_logits
from unlearning.samples import infer_task, num_samples
from unlearning.types import Dataset, Task


@torch.no_grad()
def map_batches(
    model: nn.Module,
    data: Dataset,
    fn: Callable[[torch.Tensor, Dataset], torch.Tensor],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> list[torch.Tensor]:
    """``fn(logits, batch)`` of every batch, on CPU, model in eval mode (its mode is restored).

    ``batch_size`` is an upper bound: a causal LM's batches shrink to keep their [B, T, V] logits
    within ``budgets.MAX_LOGIT_ELEMENTS``. The one forward loop of every per-sample measurement
    (here and ``membership.logit_confidence``).
    """
    dev = device_of(model, device)
    was_training = model.training
    model.eval()
    try:
        return [
            fn(logits(model, batch), batch).cpu()
            for batch in iterate_batches(data, batch_size, device=dev, num_outputs=output_size(model))
        ]
    finally:
        model.train(was_training)


def per_sample_metrics(
    model: nn.Module,
    data: Dataset,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses [N], accuracies [N]) on CPU, model in eval mode (its mode is restored)."""
    task = task or infer_task(data)

    def both(z: torch.Tensor, batch: Dataset) -> torch.Tensor:
        loss = loss_from_logits(z, batch, task).float()
        return torch.stack([loss, correct_from_logits(z, batch, task).float()])

    parts = map_batches(model, data, both, device=device, batch_size=batch_size)
    if not parts:
        return torch.zeros(0), torch.zeros(0)
    out = torch.cat(parts, dim=1)
    return out[0], out[1]


def per_sample_losses(
    model: nn.Module,
    data: Dataset,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    return per_sample_metrics(model, data, task=task, device=device, batch_size=batch_size)[0]


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean accuracy and mean loss over a data set."""
    losses, correct = per_sample_metrics(model, data, task=task, device=device, batch_size=batch_size)
    if losses.numel() == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    return {"accuracy": float(correct.double().mean()), "loss": float(losses.double().mean())}


def mia_auc(forget_losses: torch.Tensor, eval_losses: torch.Tensor) -> float:
    """AUC of the loss attack "lower loss ⇒ member": P(loss_f < loss_e) + ½ P(loss_f = loss_e).

    0.5 means forget samples are indistinguishable from unseen ones; 1.0 means all are exposed.
    Mann–Whitney U through average ranks: O(n log n), no loop over pairs.
    """
    f = torch.as_tensor(forget_losses).double().flatten()
    e = torch.as_tensor(eval_losses).double().flatten()
    nf, ne = f.numel(), e.numel()
    if nf == 0 or ne == 0:
        return float("nan")
    # Rank by −loss so that "higher score = member"; ties get their average rank.
    scores = torch.cat([-f, -e])
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each distinct value
    ranks = avg_rank[inverse]
    u = ranks[:nf].sum() - nf * (nf + 1) / 2
    return float(u / (nf * ne))


def mia_auc_margin(n_forget: int, n_unseen: int, floor: float = 0.05) -> float:
    """How far from 0.5 an AUC must be to mean something: max(floor, 2·SE), SE at AUC = 0.5.

    Under "no difference" the Mann–Whitney AUC has variance (n_f + n_u + 1) / (12·n_f·n_u)
    (Hanley & McNeil 1982, no ties): small forget sets give AUCs far from 0.5 by chance alone.
    """
    if n_forget < 1 or n_unseen < 1:
        return float("inf")
    se = ((n_forget + n_unseen + 1) / (12.0 * n_forget * n_unseen)) ** 0.5
    return max(floor, 2.0 * se)


def mia_reading(
    auc: float, n_forget: int, n_unseen: int, against: str, floor: float = 0.05
) -> dict[str, Any]:
    """The two-sided reading as a record: what an acceptance check (or a person) needs to redo it.

    ``reading`` is "over_forgetting" (AUC < 0.5 − margin), "exposed" (AUC > 0.5 + margin) or
    "indistinguishable"; ``against`` names the unseen data the forget set was compared with.
    """
    flags = mia_flags(auc, n_forget, n_unseen, floor)
    reading = flags[0].removeprefix("mia_") if flags else "indistinguishable"
    return {
        "auc": auc,
        "against": against,
        "n_forget": int(n_forget),
        "n_unseen": int(n_unseen),
        "margin": mia_auc_margin(n_forget, n_unseen, floor),
        "reading": reading,
    }


def mia_flags(auc: float, n_forget: int, n_unseen: int, floor: float = 0.05) -> list[str]:
    """The two-sided reading of the loss-attack AUC (forget vs unseen data of the same kind).

    An AUC well above 0.5 is the usual finding (forget samples still look like members); one well
    *below* 0.5 is just as visible to an attacker: the forget samples now have higher losses than
    any unseen data would, the mark of over-forgetting (a retrained model would not do that).
    Returns ``["mia_over_forgetting"]``, ``["mia_exposed"]`` or ``[]``.
    """
    if auc != auc:  # NaN: nothing to compare
        return []
    margin = mia_auc_margin(n_forget, n_unseen, floor)
    if auc < 0.5 - margin:
        return ["mia_over_forgetting"]
    if auc > 0.5 + margin:
        return ["mia_exposed"]
    return []


def measure(
    model: nn.Module,
    forget: Dataset,
    eval: Dataset | None = None,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """M = {forget_accuracy, forget_loss, eval_accuracy?, eval_loss?, mia_auc?} (eval ones need eval)."""
    task = task or infer_task(forget)
    fl, fc = per_sample_metrics(model, forget, task=task, device=device, batch_size=batch_size)
    out = {"forget_accuracy": float(fc.double().mean()), "forget_loss": float(fl.double().mean())}
    if eval is not None and num_samples(eval) > 0:
        el, ec = per_sample_metrics(model, eval, task=task, device=device, batch_size=batch_size)
        out["eval_accuracy"] = float(ec.double().mean())
        out["eval_loss"] = float(el.double().mean())
        out["mia_auc"] = mia_auc(fl, el)
    return out


def param_l2_change(
    before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module | Mapping[str, torch.Tensor]
) -> float:
    """‖θ_after − θ_before‖₂ over all floating-point parameters (buffers excluded)."""
    a = dict(before.named_parameters()) if isinstance(before, nn.Module) else dict(before)
    b = dict(after.named_parameters()) if isinstance(after, nn.Module) else dict(after)
    total = torch.zeros((), dtype=torch.float64)
    for name, t in a.items():
        if name in b and t.is_floating_point():
            total += (b[name].detach().double().cpu() - t.detach().double().cpu()).pow(2).sum()
    return float(total.sqrt())


# Metrics that the Avg Gap averages over (SalUn: UA/forget acc, RA/retain acc, TA/test acc, MIA).
GAP_METRICS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_auc")


def gap_to_reference(
    metrics: Mapping[str, float], reference_metrics: Mapping[str, float], keys: tuple[str, ...] = GAP_METRICS
) -> dict[str, Any]:
    """Absolute gap of each metric to the retrained reference, and their mean ("avg_gap").

    Uses the keys both dicts have (e.g. eval_accuracy may stand in for test_accuracy if you pass it).
    """
    gaps = {
        k: abs(float(metrics[k]) - float(reference_metrics[k]))
        for k in keys
        if k in metrics and k in reference_metrics
    }
    avg = sum(gaps.values()) / len(gaps) if gaps else float("nan")
    return {"gaps": gaps, "avg_gap": avg}


def tug_of_war(metrics: Mapping[str, float], reference_metrics: Mapping[str, float]) -> float:
    """ToW = (1 − |Δ forget acc|)(1 − |Δ retain acc|)(1 − |Δ test acc|) against the retrained model.

    Accuracies in [0, 1]; 1.0 means the unlearned model matches the retrained one on all three.
    """
    tow = 1.0
    for k in ("forget_accuracy", "retain_accuracy", "test_accuracy"):
        tow *= 1.0 - abs(float(metrics[k]) - float(reference_metrics[k]))
    return tow
