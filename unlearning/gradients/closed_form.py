"""Per-sample gradients of a final ``nn.Linear`` head in closed form, from one forward pass.

For z = W h + b and a loss of the logits, g_i = e_i [h_i, 1]ᵀ with e_i = ∂loss_i/∂z_i (softmax −
onehot): the gradients factor into residuals E and augmented head inputs H, so Σ g_i², Σ g_i and
g_i · M are matrix products over E and H and the B×C×K per-sample gradients are never formed
(a causal LM sums the factors over its tokens: G_i = Σ_t e_t h_tᵀ, formed in bounded chunks).
θ lives here as the [C, K] matrix [W | b]; :meth:`LinearHeadGradients.flatten` gives θ's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from unlearning import budgets
from unlearning.batching import iterate_batches
from unlearning.gradients.source import GradientSource
from unlearning.losses import lm_targets
from unlearning.targets import ClosedFormNotApplicable, forward_capture, head_for
from unlearning.types import Task


def _augment(h: torch.Tensor, use_w: bool, use_b: bool) -> torch.Tensor:
    """[h, 1]: folding the bias in as a column of ones makes the bias gradient part of one product."""
    parts = [h] if use_w else []
    if use_b:
        parts.append(torch.ones_like(h[..., :1]))
    return torch.cat(parts, -1)


def _residuals(
    z: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task, dtype: torch.dtype
) -> torch.Tensor:
    """∂loss_i/∂z: softmax − onehot ([B, C]), or per token scaled by the sequence's 1/T ([B, T-1, V])."""
    if task == "classification":
        e = torch.softmax(z.to(dtype), -1)
        # softmax − onehot in place: a one-hot [B, C] tensor would cost as much as the softmax.
        labels = batch["labels"].long()
        e[torch.arange(e.shape[0], device=e.device), labels] -= 1.0
        return e
    targets, valid = lm_targets(batch)
    e = torch.softmax(z[:, :-1].to(dtype), -1)
    # In place, as above: an int64 one-hot [B, T-1, V] would be the largest tensor here on a real vocab.
    e.scatter_add_(-1, targets.long().unsqueeze(-1), torch.full_like(e[..., :1], -1.0))
    scale = valid.to(dtype) / valid.sum(1, keepdim=True).clamp_min(1.0).to(dtype)
    return e * scale.unsqueeze(-1)


@dataclass
class LinearHeadGradients(GradientSource):
    """Closed-form back end; raises ClosedFormNotApplicable (at construction, or in the first forward
    pass) when θ is not a final, untied linear head whose output is the model output."""

    path = "closed_form"

    batch_size: int

    def __post_init__(self) -> None:
        self.head, self.use_w, self.use_b = head_for(self.model, self.names)
        # Classification keeps the factors of the first pass for the products ([N, C] and [N, K]:
        # small); a causal LM's [N, T, V] residuals would cost more than a second forward pass.
        self._kept: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _factors(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(residuals E, augmented head inputs H) per forward batch (sized by the logits budget)."""
        head = self.head
        for batch in iterate_batches(
            self.data, self.batch_size, device=self.device, num_outputs=head.out_features
        ):
            z, h = forward_capture(self.model, head, batch)
            dtype = torch.promote_types(h.dtype, torch.float32)
            e = _residuals(z, batch, self.task, dtype)
            hh = h.to(dtype)
            if self.task == "causal-lm":
                if hh.dim() != 3:
                    raise ClosedFormNotApplicable("causal-LM head input is not [B, T, d]")
                hh = hh[:, :-1]
            elif hh.dim() != 2:
                raise ClosedFormNotApplicable("classification head input is not [B, d]")
            yield e, _augment(hh, self.use_w, self.use_b)

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        f_sum: torch.Tensor | None = None
        g_sum: torch.Tensor | None = None
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        for e, hh in self._factors():
            if self.task == "classification":
                # Σ g² = (E²)ᵀ H² and Σ g = Eᵀ H: the B×C×K per-sample gradients are never formed.
                fs, gs = (e * e).T @ (hh * hh), e.T @ hh
                kept.append((e, hh))
            else:
                # G_i = Σ_t e_t h_tᵀ; its square needs G_i itself, so form it in bounded chunks of samples.
                gs = torch.einsum("btc,btk->ck", e, hh)
                per = budgets.rows_per_chunk(e.shape[-1] * hh.shape[-1])
                fs = torch.zeros_like(gs)
                for s in range(0, e.shape[0], per):
                    g = torch.einsum("btc,btk->bck", e[s : s + per], hh[s : s + per])
                    fs += (g * g).sum(0)
            f_sum = fs if f_sum is None else f_sum + fs
            g_sum = gs if g_sum is None else g_sum + gs
        assert f_sum is not None and g_sum is not None  # the caller rejects an empty data set
        self._kept = kept if self.task == "classification" else None
        return f_sum, g_sum

    @torch.no_grad()
    def dots(self, m: torch.Tensor) -> torch.Tensor:
        # g_i · M = e_iᵀ M h_i (summed over tokens for an LM), all samples of a batch at once.
        if self._kept is not None:
            return torch.cat([((e @ m) * hh).sum(-1) for e, hh in self._kept])
        return torch.cat([((e @ m) * hh).sum((-2, -1)) for e, hh in self._factors()])

    @torch.no_grad()
    def rows(self) -> Iterator[torch.Tensor]:
        """Materialised rows (tests and small sets only: the point of this back end is not to)."""
        for e, hh in self._factors():
            pattern = "bc,bk->bck" if self.task == "classification" else "btc,btk->bck"
            yield self.flatten(torch.einsum(pattern, e, hh))

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C, K] in [W | b] column layout → [..., P] in parameter order (weight rows, then bias)."""
        d = self.head.in_features
        lead = x.shape[:-2]
        parts = []
        if self.use_w:
            parts.append(x[..., :d].reshape(*lead, -1))
        if self.use_b:
            parts.append(x[..., -1])
        return torch.cat(parts, -1)
