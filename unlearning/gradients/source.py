"""What the influence maths needs from per-sample gradients g_i, whatever computes them.

The maths needs Σ g_i², Σ g_i and the products g_i · m; only a back end that materialises rows
needs to hold the g_i at all. A back end works in its own layout (the closed form keeps θ of a
linear head as a [C, K] matrix) and says how to flatten it to θ's [P] order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from unlearning import budgets
from unlearning.types import Dataset, Task


@dataclass
class GradientSource(ABC):
    """Per-sample gradients of the loss of every sample of ``data`` with respect to θ (``names``)."""

    path: ClassVar[str]  # "closed_form" | "func" | "loop", reported as the influence path

    model: nn.Module
    data: Dataset
    task: Task
    names: list[str]  # θ, in target order
    device: torch.device

    @abstractmethod
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_i g_i², Σ_i g_i) in the back end's own layout."""

    @abstractmethod
    def dots(self, m: torch.Tensor) -> torch.Tensor:
        """[N] g_i · m for every sample, ``m`` in the back end's own layout (after :meth:`moments`)."""

    @abstractmethod
    def rows(self) -> Iterator[torch.Tensor]:
        """Materialised per-sample gradients [c, P], θ flattened in target order, in chunks."""

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """The back end's own layout → [P] in target order (the identity for row back ends)."""
        return x


@dataclass
class RowGradients(GradientSource):
    """A back end that produces rows [c, P]: the moments and the products stream them.

    The rows of the first pass are kept for the second (the products) while they fit in
    ``budgets.MAX_CHUNK_ELEMENTS``; beyond that the second pass recomputes them.
    """

    _cache: list[torch.Tensor] | None = field(default=None, init=False, repr=False)  # first-pass rows

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        f_sum: torch.Tensor | None = None
        g_sum: torch.Tensor | None = None
        cache: list[torch.Tensor] | None = []
        size = 0
        for rows in self.rows():
            sq, s1 = (rows * rows).sum(0), rows.sum(0)
            f_sum = sq if f_sum is None else f_sum + sq
            g_sum = s1 if g_sum is None else g_sum + s1
            size += rows.numel()
            if cache is not None and budgets.fits_chunk_budget(size):
                cache.append(rows)
            else:
                cache = None  # too large to keep: the second pass recomputes the rows
        assert f_sum is not None and g_sum is not None  # the caller rejects an empty data set
        self._cache = cache
        return f_sum, g_sum

    def dots(self, m: torch.Tensor) -> torch.Tensor:
        rows = self._cache if self._cache is not None else self.rows()
        return torch.cat([r @ m for r in rows])
