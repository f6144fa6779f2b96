"""Confidence matching: the classifier's forget objective of the anchored default.

Every forget sample gets a target logit-scaled confidence φ = log p_y − log(1 − p_y) once, before
the first step: the quantile of the unseen samples' φ (under the original model) at the rank the
sample's own φ has among the forget samples (under the original too). The term pushes each sample's
φ down to its target and leaves it alone below it:

    Σ w·huber(max(0, φ − t)) / Σ w

Why so, against matching the losses (``LossMatching``, the previous default):

* **φ, not the loss.** A memorised sample's loss is ≈ 0 and so is its gradient (∝ 1 − p_y, e.g.
  e^−10): loss-space matching moves the samples that happen to move first and leaves the most
  memorised ones in place. φ is about the logit margin, linear in the logits, so every sample
  moves; it is also the statistic the per-example attack (LiRA) reads.
* **Targets fixed from the original's ranks.** Ranks re-taken every step go to whichever samples
  moved first, so hard samples that stayed memorised were handed the near-zero targets of easy
  unseen data. The original's confidence on its memorised samples still orders them by
  difficulty: on the MNIST-1D benchmark model it ranked them much as models never trained on them
  do (tuning runs, not a committed script).
* **One-sided.** Forgetting never makes a sample more familiar than it was: a two-sided pull
  raised the most confident forget samples to the top of the unseen distribution, above what
  models that never saw them give, and the attack found them.

The benchmark rows ``ga`` and ``ga-loss-match`` of ``benchmarks/RESULTS.md`` set the two side by
side (Avg Gap and LiRA TPR).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.batching import iterate_batches
from unlearning.budgets import output_size
from unlearning.losses import logits
from unlearning.membership import confidence_from_logits
from unlearning.methods.ascent.objective import Objective, ObjectiveData, quantiles_of_sorted, weighted_mean
from unlearning.types import Dataset, Task

# Per-sample targets travel in the forget batches under this key.
TARGET_KEY = "__target_confidence__"
# Huber's δ on the excess, in units of φ: quadratic near the target, linear far above it, so a
# sample 20 units too confident does not dominate the batch.
HUBER_DELTA = 1.0


def _confidence(net: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return confidence_from_logits(logits(net, batch), batch["labels"].long(), dtype=torch.float32)


@torch.no_grad()
def _confidences(net: nn.Module, data: Dataset, device: torch.device) -> torch.Tensor:
    parts = [
        _confidence(net, b) for b in iterate_batches(data, 1024, device=device, num_outputs=output_size(net))
    ]
    return torch.cat(parts)


class ConfidenceMatching(Objective):
    """Σ w·huber(max(0, φ − t)) / Σ w, each sample's target t fixed from the original's ranks."""

    name = "match"

    def __init__(self) -> None:
        self.targets: torch.Tensor | None = None  # the unseen φ, sorted

    def prepare(self, data: ObjectiveData) -> dict[str, torch.Tensor]:
        assert data.unseen is not None  # resolve_objective refuses "match" without unseen data
        self.targets = torch.sort(_confidences(data.net, data.unseen, data.device)).values
        phi = _confidences(data.net, data.forget, data.device)
        rank = torch.argsort(torch.argsort(phi))
        quantile = (rank.to(phi.dtype) + 0.5) / phi.numel()
        return {TARGET_KEY: quantiles_of_sorted(self.targets, quantile).cpu()}

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        excess = torch.relu(_confidence(net, batch) - batch[TARGET_KEY])
        term = F.huber_loss(excess, torch.zeros_like(excess), reduction="none", delta=HUBER_DELTA)
        return weighted_mean(term, weights)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objective": self.name, "match_on": "confidence"}
        if self.targets is not None:
            out["match_target_median_confidence"] = float(self.targets.double().median())
        return out
