"""Noised copies of held-out token sequences for the KL anchor of a causal LM.

The anchor's data are a few dozen held-out sequences: a KL term on them alone holds the model's
next-token distributions at those contexts and lets them drift at every other context, where the
kept sources' text also lies. A copy of a sequence in which a share of the tokens is redrawn from
the original model's own next-token distribution (given the true prefix, one forward for all
positions) is a new context close to the held-out text: the token analogue of the mixed float
inputs of ``KLAnchor`` (token ids do not mix). The copies are scored by the original like the
anchor itself, so the term still pulls only toward the original model's behaviour.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearning.batching import iterate_batches
from unlearning.budgets import output_size
from unlearning.losses import logits
from unlearning.samples import num_samples
from unlearning.types import Dataset

# The share of each copy's real tokens (the first aside) redrawn. The kept-chain KL of the Markov
# task barely moved between 0.15 and 0.5 in tuning runs (not a committed script).
RESAMPLE_RATE = 0.3


@torch.no_grad()
def resampled_copies(
    net: nn.Module,
    anchor: Dataset,
    copies: int,
    generator: torch.Generator,
    *,
    rate: float = RESAMPLE_RATE,
    device: torch.device | None = None,
) -> Dataset:
    """``copies`` noised copies of every sequence of ``anchor`` (``{"input_ids", ...}``), in order
    copy-major ([copy 0 of every sequence, copy 1, ...]); the other keys are repeated as they are.

    In each copy a token at position t ≥ 1 that the attention mask keeps is replaced, with
    probability ``rate``, by a draw from ``net``'s next-token distribution given the *original*
    tokens before t. ``net`` runs in its current mode (the loop's eval mode); the draws come from
    ``generator`` (CPU), so a seed gives the same copies on any device.
    """
    ids = anchor["input_ids"]
    if copies < 1 or num_samples(anchor) == 0 or ids.shape[1] < 2:
        return {k: v[:0] for k, v in anchor.items()}
    dev = device if device is not None else ids.device
    draws = []
    # One forward of the originals gives every position's distribution; copies draw from it.
    for batch in iterate_batches(anchor, 256, device=dev, num_outputs=output_size(net)):
        probs = torch.softmax(logits(net, batch)[:, :-1].float(), dim=-1).cpu()  # [B, T-1, V]
        b, t, v = probs.shape
        flat = probs.reshape(b * t, v)
        draws.append(
            torch.stack([torch.multinomial(flat, 1, generator=generator).view(b, t) for _ in range(copies)])
        )  # [copies, B, T-1]
    drawn = torch.cat(draws, dim=1)  # [copies, N, T-1]
    n, width = ids.shape
    replace = torch.rand((copies, n, width - 1), generator=generator) < rate
    if "attention_mask" in anchor:
        replace &= anchor["attention_mask"][:, 1:].bool().cpu().unsqueeze(0)
    base = ids.cpu().unsqueeze(0).expand(copies, n, width).clone()
    base[:, :, 1:] = torch.where(replace, drawn.to(base.dtype), base[:, :, 1:])
    out: dict[str, torch.Tensor] = {
        k: v.repeat(copies, *([1] * (v.dim() - 1))) for k, v in anchor.items() if k != "input_ids"
    }
    out["input_ids"] = base.reshape(copies * n, width).to(ids.device)
    return out
