"""Forward pass, per-sample loss and accuracy for the two tasks the engine knows.

Classification: ``{"inputs", "labels"}``, loss = cross entropy per sample.
Causal LM: ``{"input_ids", "attention_mask"?, "labels"?}``, loss = mean next-token cross entropy
per sequence (logits at t predict token t+1), over the tokens the mask keeps; this is the
per-sequence loss the official IMU LM code uses (``synthetic/unlearn_IMU.py``, ``loss_vector``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.samples import infer_task
from unlearning.types import Task

IGNORE_INDEX = -100


def _accepts_attention_mask(model: nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "attention_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def logits(
    model: nn.Module, batch: Mapping[str, torch.Tensor], forward: Callable[..., Any] | None = None
) -> torch.Tensor:
    """Model output as a logits tensor; Hugging Face outputs carry it in ``.logits``.

    ``forward`` replaces ``model(...)`` (torch.func passes a ``functional_call`` here).
    """
    fwd = forward if forward is not None else model
    if "input_ids" in batch:
        if "attention_mask" in batch and _accepts_attention_mask(model):
            out = fwd(batch["input_ids"], attention_mask=batch["attention_mask"])
        else:
            out = fwd(batch["input_ids"])
    else:
        out = fwd(batch["inputs"])
    return getattr(out, "logits", out)


def _math_dtype(z: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast for the loss; float64 stays float64 (tests compare paths tightly).
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def lm_targets(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets [B, T-1] and a float mask of the positions that count."""
    ids = batch["input_ids"]
    targets = batch["labels"][:, 1:] if "labels" in batch else ids[:, 1:]
    valid = targets != IGNORE_INDEX
    if "attention_mask" in batch:
        mask = batch["attention_mask"].bool()
        # A prediction counts only when both its context token and its target are real tokens.
        valid = valid & mask[:, 1:] & mask[:, :-1]
    return targets.clamp_min(0), valid.to(torch.float32)


def loss_from_logits(z: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task) -> torch.Tensor:
    """Per-sample loss [B] from logits (float32 math even for half-precision models)."""
    if task == "classification":
        return F.cross_entropy(_math_dtype(z), batch["labels"].long(), reduction="none")
    targets, valid = lm_targets(batch)
    zz = _math_dtype(z[:, :-1])
    tok = F.cross_entropy(zz.reshape(-1, zz.shape[-1]), targets.reshape(-1).long(), reduction="none")
    valid = valid.to(tok.dtype)
    tok = tok.view_as(valid) * valid
    return tok.sum(1) / valid.sum(1).clamp_min(1.0)


def correct_from_logits(z: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task) -> torch.Tensor:
    """Per-sample accuracy [B] in [0, 1]: 0/1 for classification, next-token accuracy for an LM."""
    if task == "classification":
        return (z.argmax(-1) == batch["labels"]).to(torch.float32)
    targets, valid = lm_targets(batch)
    hit = (z[:, :-1].argmax(-1) == targets).to(torch.float32) * valid
    return hit.sum(1) / valid.sum(1).clamp_min(1.0)


def per_sample_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None
) -> torch.Tensor:
    task = task or infer_task(batch)
    return loss_from_logits(logits(model, batch), batch, task)


def per_sample_correct(
    model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None
) -> torch.Tensor:
    task = task or infer_task(batch)
    return correct_from_logits(logits(model, batch), batch, task)


@torch.no_grad()
def accuracy(model: nn.Module, batch: Mapping[str, torch.Tensor], task: Task | None = None) -> float:
    return float(per_sample_correct(model, batch, task).mean())
