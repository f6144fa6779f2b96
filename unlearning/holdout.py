"""The eval (holdout) set split in two: an anchor half the method may use, a check half it never sees.

A method that anchors on held-out data or stops when the forget set looks like held-out data has
fitted itself to those samples: measured on the same ones, it looks about twice as good as it is.
So ``unlearn()`` gives the method one half (anchor and early stop) and measures its report, the
acceptance check included, on the other. The split is disjoint, seeded by the run's seed, and
stratified by label for classification (each class halved), so both halves keep the class mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from unlearning.samples import infer_task, num_samples, take
from unlearning.types import Dataset

# Offsets the run's seed so that the split draws differ from the method's own draws.
_SALT = 0x5EED_4A1F


@dataclass(frozen=True)
class HoldoutSplit:
    """Positions in the caller's eval set: ``anchor`` (given to the method) and ``check`` (measured)."""

    anchor: torch.Tensor  # int64, ascending
    check: torch.Tensor  # int64, ascending
    seed: int
    stratified: bool

    def parts(self, data: Dataset) -> tuple[Dataset, Dataset]:
        return take(data, self.anchor), take(data, self.check)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "stratified": self.stratified,
            "n_anchor": int(self.anchor.numel()),
            "n_check": int(self.check.numel()),
            "anchor_indices": self.anchor.tolist(),
            "check_indices": self.check.tolist(),
        }


def split_holdout(data: Dataset, seed: int, fraction: float = 0.5) -> HoldoutSplit | None:
    """A seeded split of ``data`` into anchor (``fraction``) and check positions; None below 2 samples.

    Classification: every class is split on its own, so both halves hold each class in about the
    same share (a class with an odd count gives its extra sample to a random half). Vectorised: one
    permutation, one stable sort by label, the position of each sample within its class.
    """
    n = num_samples(data)
    if n < 2:
        return None
    g = torch.Generator().manual_seed((int(seed) + _SALT) % 2**63)
    perm = torch.randperm(n, generator=g)
    stratified = infer_task(data) == "classification"
    if stratified:
        labels = data["labels"].cpu()[perm]
        order = torch.argsort(labels, stable=True)
        perm, labels = perm[order], labels[order]
        _, counts = torch.unique_consecutive(labels, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n) - torch.repeat_interleave(starts, counts)
        # floor(n_c·fraction + u_c), u_c uniform: the odd sample goes to either half at random.
        quota = torch.floor(counts * fraction + torch.rand(counts.numel(), generator=g)).long()
        in_anchor = pos < torch.repeat_interleave(quota, counts)
    else:
        in_anchor = torch.arange(n) < round(n * fraction)
    # Both halves non-empty whatever the rounding did.
    if bool(in_anchor.all()) or not bool(in_anchor.any()):
        in_anchor = torch.arange(n) < n // 2
    anchor = torch.sort(perm[in_anchor]).values
    check = torch.sort(perm[~in_anchor]).values
    return HoldoutSplit(anchor, check, int(seed), stratified)
