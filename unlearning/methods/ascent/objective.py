"""What one ascent step minimises: a forget term on a batch of the selected forget samples, plus
terms on other data.

The loop computes the gradient of ``objective(net, batch, weights, task)`` with respect to θ.
``net`` is the model the loop runs: the head alone when features are cached (``features.py``), and
the data an objective reads (the forget batch, the anchor set given to :meth:`Objective.prepare`)
are then head-input features too, so every term goes through the same ``logits`` / loss code.

Forget terms, all weighted per sample (IMU's influence weights, or ones):

* :class:`WeightedAscent`: −Σ w·ℓ / Σ w, plain gradient ascent (IMU, GA); unbounded: it needs a stop.
* :class:`NPO` (Zhang et al. 2024): (2/β)·Σ w·softplus(β(ℓ_ref − ℓ)) / Σ w, ℓ_ref the original
  model's loss; its gradient is ascent scaled by 2σ(β(ℓ_ref − ℓ)), which fades once a sample's loss
  has left the original's.
* :class:`LossMatching`: Σ w·(ℓ − t)² / Σ w, each forget loss pulled to the loss unseen data has at
  the same rank (the quantile of the unseen losses under the original model): the forget losses end
  up distributed as those of unseen data, which is what a retrained model gives them, and the pull
  turns around past the target instead of pushing on. A causal LM's matching; a classifier's
  default matches the label's confidence instead (``confidence_matching.py``).

Other terms: :class:`KLAnchor`, λ·KL(original ‖ current) on batches of the anchor set (held-out
data, widened by mixes of float inputs or noised copies of token sequences): it keeps the model's
function where the forget term should not reach.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.batching import iterate_batches
from unlearning.budgets import output_size
from unlearning.losses import lm_targets, logits, loss_from_logits
from unlearning.methods.ascent.resample import resampled_copies
from unlearning.samples import num_samples, take
from unlearning.types import Dataset, Task

# Per-sample tensors an objective keeps beside the forget samples travel in the batches under
# these keys (see :meth:`Objective.prepare`).
REF_LOSS_KEY = "__ref_loss__"

# Teacher log-probabilities of the anchor set are kept when they are at most this many elements
# (128 MiB in float32); a longer LM anchor set keeps a frozen copy of the model and runs it per batch.
TEACHER_CACHE_MAX_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class ObjectiveData:
    """What an objective may read before the first step, as the loop runs it."""

    net: nn.Module  # the model of the steps (the head alone when features are cached), θ as given
    forget: Dataset  # the whole forget set, in the net's input (features when cached)
    anchor: Dataset | None  # held-out samples of the KL term, in the net's input
    unseen: Dataset | None  # held-out samples whose losses a retrained model gives the forget set
    task: Task
    device: torch.device
    generator: torch.Generator


@torch.no_grad()
def _losses(net: nn.Module, data: Dataset, task: Task, device: torch.device) -> torch.Tensor:
    """Per-sample losses [N] on ``device`` in the net's current mode (the loop's eval mode)."""
    out = [
        loss_from_logits(logits(net, b), b, task).float()
        for b in iterate_batches(data, 1024, device=device, num_outputs=output_size(net))
    ]
    return torch.cat(out)


class Objective(ABC):
    name: str = "custom"

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        """Called once before the first step, θ still the original's. Returns per-sample tensors
        [N, ...] of the forget set that ride along in its batches (under their own keys)."""
        return {}

    @abstractmethod
    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        """The scalar loss of one step; ``weights`` [B] are the batch's per-sample weights (> 0)."""

    def describe(self) -> dict[str, Any]:
        """Report entries: what the objective ran with."""
        return {"objective": self.name}


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * values).sum() / weights.sum()


class WeightedAscent(Objective):
    """−Σ w_i·loss_i / Σ w_i: gradient ascent on the weighted mean forget loss (IMU; GA with w = 1)."""

    name = "ascent"

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        ce = loss_from_logits(logits(net, batch), batch, task)
        return -weighted_mean(ce, weights)


class NPO(Objective):
    """Negative preference optimisation: (2/β)·softplus(β(ℓ_ref − ℓ)), ℓ_ref the original's loss.

    The per-sample loss is the engine's (cross entropy; a causal LM's mean token loss), so β applies
    to the mean log-likelihood ratio per token rather than to the sequence's sum.
    """

    name = "npo"

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        return {REF_LOSS_KEY: _losses(data.net, data.forget, data.task, data.device).cpu()}

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        loss = loss_from_logits(logits(net, batch), batch, task)
        npo = F.softplus(self.beta * (batch[REF_LOSS_KEY] - loss)) * (2.0 / self.beta)
        return weighted_mean(npo, weights)

    def describe(self) -> dict[str, Any]:
        return {"objective": self.name, "npo_beta": self.beta}


def quantiles_of_sorted(sorted_values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation quantiles ``q`` ∈ [0, 1] of an ascending 1-D tensor (as torch.quantile)."""
    m = sorted_values.numel()
    pos = q.clamp(0, 1) * (m - 1)
    lo = pos.floor().long().clamp(max=m - 1)
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo).to(sorted_values.dtype)
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


class LossMatching(Objective):
    """Σ w·(ℓ − t)² / Σ w with t the unseen losses' quantile at ℓ's rank in the batch.

    The targets are the original model's losses on the unseen set (taken once): a model retrained
    without the forget samples scores them as the original scores data it never saw. Ranks are taken
    within each batch, so the batch's losses are pulled onto the unseen distribution as a whole
    (a 1-D optimal transport: sorted onto sorted) without fixing which sample ends where.
    """

    name = "match"

    def __init__(self) -> None:
        self.targets: torch.Tensor | None = None

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        # Taken once, from the original. Targets taken again every epoch from the current model
        # (which a retrained model would also suggest) fed back: the forget losses pushed the unseen
        # losses up, which raised the targets, and MNIST-1D runs collapsed to chance.
        assert data.unseen is not None  # resolve_objective refuses "match" without unseen data
        self.targets = torch.sort(_losses(data.net, data.unseen, data.task, data.device)).values
        return {}

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        assert self.targets is not None, "prepare() first"
        loss = loss_from_logits(logits(net, batch), batch, task)
        b = loss.numel()
        rank = torch.argsort(torch.argsort(loss.detach()))
        target = quantiles_of_sorted(self.targets, (rank.to(loss.dtype) + 0.5) / b)
        return weighted_mean((loss - target) ** 2, weights)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objective": self.name}
        if self.targets is not None:
            out["match_target_mean_loss"] = float(self.targets.double().mean())
        return out


def _log_probs(z: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(z if z.dtype in (torch.float32, torch.float64) else z.float(), dim=-1)


class KLAnchor(Objective):
    """weight · KL(original ‖ current) on the anchor set, one batch of it per step (cycled, shuffled).

    Classification: KL of the class distributions, averaged over samples. Causal LM: KL of the
    next-token distributions at the positions the loss counts, averaged per sequence, then over
    sequences. The original's log-probabilities are computed once when small enough
    (``TEACHER_CACHE_MAX_ELEMENTS``); otherwise a frozen copy of the net gives them per batch.
    """

    name = "kl_anchor"

    def __init__(self, weight: float, batch_size: int, mixup: bool = False, copies: int = 0) -> None:
        self.weight, self.batch_size, self.mixup, self.copies = weight, batch_size, mixup, copies
        self.data: Dataset | None = None
        self.n_held_out = 0  # anchor samples before any noised copies
        self.copied = 0  # noised copies per sequence actually added (token ids of a causal LM only)
        self.teacher: torch.Tensor | None = None  # cached log-probs [M, C] or [M, T-1, V]
        self.frozen: nn.Module | None = None
        self.mixing = False  # mixup asked for and possible (float classification inputs)
        self.order = torch.zeros(0, dtype=torch.long)
        self.pos = 0

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        assert data.anchor is not None
        self.data, self.task = data.anchor, data.task
        self.device, self.generator = data.device, data.generator
        self.n_held_out = num_samples(data.anchor)
        ids = data.anchor.get("input_ids")
        if self.copies and data.task == "causal-lm" and ids is not None and not ids.is_floating_point():
            # Token ids (not cached head features): the noised copies join the anchor set, scored
            # by the original below like the held-out sequences themselves.
            extra = resampled_copies(data.net, data.anchor, self.copies, data.generator, device=data.device)
            self.data = {k: torch.cat([v, extra[k].to(v.device)]) for k, v in data.anchor.items()}
            self.copied = self.copies
        m = num_samples(self.data)
        outputs = output_size(data.net) or 1
        per_sample = outputs * (int(ids.shape[1]) if ids is not None and data.task == "causal-lm" else 1)
        if m * per_sample <= TEACHER_CACHE_MAX_ELEMENTS:
            with torch.no_grad():
                parts = [
                    self._teacher_of(data.net, b)
                    for b in iterate_batches(self.data, 1024, device=data.device, num_outputs=outputs)
                ]
            self.teacher = torch.cat(parts)
        inputs = data.anchor.get("inputs")
        self.mixing = (
            self.mixup and data.task == "classification" and inputs is not None and inputs.is_floating_point()
        )
        if self.teacher is None or self.mixing:
            # Mixed samples are new points every step: their teacher is the original run live.
            self.frozen = copy.deepcopy(data.net).requires_grad_(False)
        return {}

    def _teacher_of(self, net: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        z = logits(net, batch)
        return _log_probs(z[:, :-1] if self.task == "causal-lm" else z)

    def _next_indices(self) -> torch.Tensor:
        m = num_samples(self.data) if self.data is not None else 0
        b = min(self.batch_size, m)
        if self.pos + b > self.order.numel():
            self.order, self.pos = torch.randperm(m, generator=self.generator), 0
        idx = self.order[self.pos : self.pos + b]
        self.pos += b
        return idx

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        assert self.data is not None, "prepare() first"
        idx = self._next_indices()
        anchor = {k: v.to(self.device) for k, v in take(self.data, idx).items()}
        if self.teacher is not None:
            teacher = self.teacher[idx.to(self.teacher.device)]
        else:
            assert self.frozen is not None
            with torch.no_grad():
                teacher = self._teacher_of(self.frozen, anchor)
        z = logits(net, anchor)
        student = _log_probs(z[:, :-1] if task == "causal-lm" else z)
        kl = (teacher.exp() * (teacher - student)).sum(-1)  # [B] or [B, T-1]
        if task == "causal-lm":
            _, valid = lm_targets(anchor)
            valid = valid.to(kl.dtype)
            kl = (kl * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        elif self.mixing:
            kl = torch.cat([kl, self._mixed_kl(net, anchor["inputs"])])
        return self.weight * kl.mean()

    def _mixed_kl(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """KL(original ‖ current) [B] on λ·x + (1−λ)·x[π], one λ ~ U(0, 1) and pairing π per sample."""
        assert self.frozen is not None
        b = x.shape[0]
        # Drawn on the CPU generator (reproducible whatever the device), then moved once.
        lam = torch.rand((b,) + (1,) * (x.dim() - 1), generator=self.generator).to(x.device, x.dtype)
        perm = torch.randperm(b, generator=self.generator).to(x.device)
        mixed = {"inputs": lam * x + (1 - lam) * x[perm]}
        with torch.no_grad():
            teacher = _log_probs(logits(self.frozen, mixed))
        student = _log_probs(logits(net, mixed))
        return (teacher.exp() * (teacher - student)).sum(-1)

    def describe(self) -> dict[str, Any]:
        return {
            "anchor": "kl",
            "anchor_weight": self.weight,
            "anchor_mixup": self.mixing,
            "anchor_copies": self.copied,
            "n_anchor": self.n_held_out,
        }


class Combined(Objective):
    """The sum of several terms (a forget term and an anchor)."""

    def __init__(self, terms: Sequence[Objective]) -> None:
        self.terms = list(terms)
        self.name = "+".join(t.name for t in self.terms)

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        extras: dict[str, torch.Tensor] = {}
        for t in self.terms:
            extras.update(t.prepare(data))
        return extras

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        total = self.terms[0](net, batch, weights, task)
        for t in self.terms[1:]:
            total = total + t(net, batch, weights, task)
        return total

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in self.terms:
            out.update(t.describe())
        out["objective"] = self.terms[0].describe()["objective"]
        return out
