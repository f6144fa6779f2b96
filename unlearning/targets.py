"""The target θ: which parameters a method changes, and when θ is a final linear head.

``None`` selects the last ``nn.Linear`` (the official IMU "last linear layer"); a head whose output is
the model output admits closed forms (per-sample gradients, cached head-input features) that any
other target must do without: :func:`head_for` and :func:`forward_capture` say whether it is one.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from unlearning.errors import ParamsError
from unlearning.losses import logits

Target = str | Sequence[str] | None


class ClosedFormNotApplicable(Exception):
    """The target is not a final linear layer whose output is the model output."""


def resolve_target(model: nn.Module, target: Target) -> list[str]:
    """Names of the target parameters θ, in ``named_parameters`` order.

    ``None`` → the last ``nn.Linear`` in module order (the official "last linear layer");
    ``"all"`` → every parameter; otherwise a name, a module name, a glob or a full-match regex,
    or a list of those (each must match something).
    """
    names = [n for n, _ in model.named_parameters()]
    if target is None:
        linears = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ParamsError(f"model has no nn.Linear layer to target; parameters: {names}")
        ids = {id(p) for p in linears[-1].parameters(recurse=False)}
        # Identity, not name: a tied head weight is listed under the name it was first registered with.
        return [n for n, p in model.named_parameters() if id(p) in ids]
    if isinstance(target, str):
        if target == "all":
            return names
        patterns: list[str] = [target]
    else:
        patterns = list(target)
        if not patterns:
            raise ParamsError("target is an empty list")
    chosen: set[str] = set()
    for pat in patterns:
        hits = [n for n in names if _matches(n, pat)]
        if not hits:
            raise ParamsError(f"target {pat!r} matches no parameter; available parameters: {names}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def _matches(name: str, pattern: str) -> bool:
    if name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def target_params(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    return [params[n] for n in names]


@contextmanager
def focus_on(model: nn.Module, names: Sequence[str]) -> Iterator[list[nn.Parameter]]:
    """Eval mode (BatchNorm uses running stats, no dropout) and gradients on θ only; yields θ.

    The model's mode and every parameter's ``requires_grad`` are restored afterwards.
    """
    wanted = set(names)
    training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    for n, p in model.named_parameters():
        p.requires_grad_(n in wanted)
    try:
        yield target_params(model, names)
    finally:
        model.train(training)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


def head_for(model: nn.Module, names: Sequence[str]) -> tuple[nn.Linear, bool, bool]:
    """The linear layer holding exactly the target parameters, and which of (weight, bias) are θ."""
    by_id = dict(model.named_parameters())
    wanted = {id(by_id[n]) for n in names}
    for _, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        own = {id(p) for p in mod.parameters(recurse=False)}
        if wanted <= own:
            use_w = id(mod.weight) in wanted
            use_b = mod.bias is not None and id(mod.bias) in wanted
            # A tied weight (e.g. LM head = embedding) also gets gradient through its other use.
            uses = sum(1 for _, p in model.named_parameters(remove_duplicate=False) if id(p) in wanted)
            if uses != len(wanted):
                raise ClosedFormNotApplicable("the target linear layer shares its weight with another module")
            return mod, use_w, use_b
    raise ClosedFormNotApplicable("the target is not (part of) one nn.Linear layer")


def forward_capture(
    model: nn.Module, head: nn.Linear, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the head's input from one forward pass; checks that the head output is the logits."""
    seen: dict[str, Any] = {}

    def hook(_mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["h"], seen["z"] = inp[0], out

    handle = head.register_forward_hook(hook)
    try:
        z = logits(model, batch)
    finally:
        handle.remove()
    if "z" not in seen or seen["z"] is not z:
        raise ClosedFormNotApplicable("the target linear layer's output is not the model output")
    h: torch.Tensor = seen["h"]
    return z, h
