"""What one ascent step minimises on a batch of the selected forget samples.

The loop computes the gradient of ``objective(net, batch, weights, task)`` with respect to θ; the
objective decides the loss. Another objective (NPO, loss matching) subclasses :class:`Objective`; a
term on other data (a KL to the original model on a holdout set) holds that data and draws its own
batches. ``net`` is the model the loop runs: the head alone when features are cached
(``features.py``), so an objective that needs the full model must say so by holding it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import nn

from unlearning.losses import logits, loss_from_logits
from unlearning.types import Task


class Objective(ABC):
    @abstractmethod
    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        """The scalar loss of one step; ``weights`` [B] are the batch's per-sample weights (> 0)."""


class WeightedAscent(Objective):
    """−Σ w_i·loss_i / Σ w_i: gradient ascent on the weighted mean forget loss (IMU; GA with w = 1)."""

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        ce = loss_from_logits(logits(net, batch), batch, task)
        return -(weights * ce).sum() / weights.sum()
