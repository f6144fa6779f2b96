"""Per-sample gradients of any target with ``torch.func``: vmap over grad, in bounded chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from unlearning import budgets
from unlearning.batching import iterate_batches
from unlearning.errors import ParamsError
from unlearning.gradients.source import RowGradients
from unlearning.losses import logits, loss_from_logits
from unlearning.samples import num_samples
from unlearning.targets import target_params
from unlearning.types import Dataset


def func_chunk_size(model: nn.Module, data: Dataset, names: Sequence[str], chunk_size: int) -> int:
    """Samples per torch.func chunk: at most ``chunk_size``, with c·P ≤ ``budgets.MAX_CHUNK_ELEMENTS``
    (P = number of target parameter elements) and the chunk's logits within the forward budget;
    at least 1."""
    if chunk_size < 1:
        raise ParamsError(f"chunk_size must be at least 1, got {chunk_size}")
    p = sum(t.numel() for t in target_params(model, names))
    by_grads = budgets.rows_per_chunk(p)
    return budgets.batch_size_for(data, min(chunk_size, by_grads), budgets.output_size(model))


@dataclass
class FuncGradients(RowGradients):
    """Rows [c, P] for chunks of up to ``chunk_size`` samples; :func:`func_chunk_size` lowers c where
    [c, P] or the chunk's logits would be too large."""

    path = "func"

    chunk_size: int

    def rows(self) -> Iterator[torch.Tensor]:
        model, task, names = self.model, self.task, self.names
        params = {n: p.detach() for n, p in zip(names, target_params(model, names), strict=True)}
        chunk = func_chunk_size(model, self.data, names, self.chunk_size)

        def sample_loss(tp: dict[str, torch.Tensor], sample: dict[str, torch.Tensor]) -> torch.Tensor:
            # The attention mask may come in unbatched (held constant: see ``_masked_rows``).
            one = {k: v.unsqueeze(0) for k, v in sample.items()}

            def fwd(*args: Any, **kwargs: Any) -> Any:
                return functional_call(model, tp, args, kwargs)

            return loss_from_logits(logits(model, one, forward=fwd), one, task)[0]

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0))
        for batch in iterate_batches(self.data, chunk, device=self.device):
            if "attention_mask" not in batch:
                g = per_sample(params, batch)
                yield torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1)
                continue
            yield self._masked_rows(params, batch, sample_loss)

    def _masked_rows(
        self,
        params: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        sample_loss: Any,
    ) -> torch.Tensor:
        """Rows of a batch with an attention mask: vmap over the samples that share one mask row.

        Hugging Face models branch on the mask's values (``create_causal_mask`` skips an all-ones
        mask with ``.all()``), which vmap cannot trace; a mask held constant inside vmap is a plain
        tensor again. Right-padded sequences have one mask per length, so the groups are few.
        """
        masks, group = torch.unique(batch["attention_mask"], dim=0, return_inverse=True)
        rest = {k: v for k, v in batch.items() if k != "attention_mask"}
        out: torch.Tensor | None = None
        for j in range(masks.shape[0]):
            idx = torch.nonzero(group == j).squeeze(1)
            mask = masks[j]

            def with_mask(
                tp: dict[str, torch.Tensor], sample: dict[str, torch.Tensor], mask: torch.Tensor = mask
            ) -> torch.Tensor:
                loss: torch.Tensor = sample_loss(tp, {**sample, "attention_mask": mask})
                return loss

            g = vmap(grad(with_mask), in_dims=(None, 0))(params, {k: v[idx] for k, v in rest.items()})
            rows = torch.cat([g[n].reshape(g[n].shape[0], -1) for n in self.names], 1)
            if out is None:
                out = rows.new_empty(num_samples(batch), rows.shape[1])
            out[idx] = rows
        assert out is not None  # a batch holds at least one sample
        return out
