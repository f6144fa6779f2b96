"""Cached head-input features: when θ is a final linear head, the ascent runs on the head alone.

The forward runs in eval mode and θ is its last operation, so the head's input features of the
forget and eval sets never change during the ascent: computed once, every step and check is one
head product, with the same result as the full forward to float tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unlearning.batching import iterate_batches
from unlearning.samples import num_samples
from unlearning.targets import ClosedFormNotApplicable, forward_capture, head_for
from unlearning.types import Dataset

# Bound on cached head-input elements (forget + eval sets; 1 GiB in float32); above it the ascent
# keeps running full forward passes rather than risk device memory on a long-sequence LM.
FEATURE_CACHE_MAX_ELEMENTS = 1 << 28
# Batch of the one caching forward pass: the same size as the checks' batches (``measure``).
FEATURE_BATCH_SIZE = 1024


class HeadOnFeatures(nn.Module):
    """The head applied to cached features; takes (and ignores) the attention mask like the model."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head
        self.eval()  # measure() restores the mode it finds: it must find eval mode, as the model's

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(features)


class _CallCounter:
    """Counts the head's calls in one forward pass (a forward pre-hook)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_: Any) -> None:
        self.calls += 1


def cache_features(
    model: nn.Module, names: Sequence[str], sets: Sequence[Dataset | None], device: torch.device
) -> tuple[nn.Module, list[Dataset | None]]:
    """The head as a model and each data set with its input replaced by the head's input features.

    The feature sets keep the key the forward dispatches on ("inputs" / "input_ids") and every other
    tensor (labels, attention mask), so loss, targets, masks and accuracy go through the same code as
    with the full model. A causal LM gets explicit labels because its targets are read from
    ``input_ids`` when labels are absent. Raises ClosedFormNotApplicable when caching does not apply.
    """
    head, _, _ = head_for(model, names)
    # One feature row per sample, or per token for a causal LM.
    rows = sum(d["input_ids"].numel() if "input_ids" in d else num_samples(d) for d in sets if d is not None)
    if rows * head.in_features > FEATURE_CACHE_MAX_ELEMENTS:
        raise ClosedFormNotApplicable("the head's input features are too large to cache")
    counter = _CallCounter()
    out: list[Dataset | None] = []
    handle = head.register_forward_pre_hook(counter)
    try:
        with torch.no_grad():
            for data in sets:
                if data is None:
                    out.append(None)
                    continue
                key = "input_ids" if "input_ids" in data else "inputs"
                feats = []
                # The forward still builds [B, T, V] logits for an LM: the logits budget bounds B.
                batches = iterate_batches(
                    data, FEATURE_BATCH_SIZE, device=device, num_outputs=head.out_features
                )
                for batch in batches:
                    counter.calls = 0
                    feats.append(forward_capture(model, head, batch)[1])
                    if counter.calls != 1:
                        # Applied twice, the head's input would depend on θ through the first call.
                        raise ClosedFormNotApplicable("the head runs more than once per forward pass")
                cached = {k: v.to(device) for k, v in data.items()}
                if key == "input_ids" and "labels" not in cached:
                    cached["labels"] = cached["input_ids"]
                cached[key] = torch.cat(feats)
                out.append(cached)
    finally:
        handle.remove()
    return HeadOnFeatures(head), out
