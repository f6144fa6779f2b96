"""Reference per-sample gradients: one backward per sample, as the official IMU code does
(``grad_z_last``). Slow; the other back ends are tested against it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from unlearning.batching import to_device
from unlearning.gradients.source import RowGradients
from unlearning.losses import logits, loss_from_logits
from unlearning.samples import num_samples, take
from unlearning.targets import target_params


@dataclass
class LoopGradients(RowGradients):
    path = "loop"

    def rows(self) -> Iterator[torch.Tensor]:
        params = target_params(self.model, self.names)
        for i in range(num_samples(self.data)):
            one = to_device(take(self.data, slice(i, i + 1)), self.device)
            loss = loss_from_logits(logits(self.model, one), one, self.task)[0]
            # A parameter outside the forward has a zero gradient, as torch.func.grad gives it.
            gs = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
            yield torch.cat([g.reshape(-1) for g in gs]).unsqueeze(0)
