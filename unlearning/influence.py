"""IMU steps 1–5: per-sample gradients, diagonal Fisher, influence, selection and weights.

Matches the official code, ``goodluckisallyouneed/IMU``:
``Classification/unlearn/IMU.py`` (``compute_fisher_matrix_from_dataset``, ``compute_influence_weights``
and the selection block of ``IMU``) and ``synthetic/unlearn_IMU.py`` (``select_top_negative_influence``):

* g_i = ∇θ loss_i on one sample, model in eval mode; θ = the last linear layer;
* F = mean_i g_i² + 0.01, I_i = −(g_i ⊙ F⁻¹) · ḡ with ḡ = mean_i g_i;
* keep I_i < 0; of those the top ``max(int(n_negative · top_fraction), 1)`` by |I_i|
  (the fraction is of the negative ones, truncated, at least one);
* w_i = sqrt(|I_i|), clamped from above at ``torch.quantile(w, 0.93)`` of the selected weights.

The official code gets g_i with a batch-size-1 backward loop (``method="loop"`` here). For a final
``nn.Linear`` whose output is the model output, every quantity is a few matrix products over one
forward pass (``method="closed_form"``); any other target uses ``torch.func`` (vmap over grad).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from unlearning.errors import ParamsError
from unlearning.tasks import (
    batch_size_for,
    infer_task,
    iterate_batches,
    lm_targets,
    logits,
    loss_from_logits,
    num_samples,
    output_size,
    take,
    to_device,
)
from unlearning.types import Dataset, Task

GradMethod = Literal["auto", "closed_form", "func", "loop"]
Target = str | Sequence[str] | None

# Bounds the size of materialised per-sample gradients (elements, ~256 MiB in float32): the causal-LM
# Fisher chunk of the closed form, each torch.func chunk [c, P] (c = this // P, at least 1: a tied
# GPT-2-size head has P ≈ 38M, so 64 rows would be ~10 GB) and the cache of rows kept between the
# two passes. Forward batches are bounded separately, by ``tasks.MAX_LOGIT_ELEMENTS``.
MAX_CHUNK_ELEMENTS = 1 << 26


class ClosedFormNotApplicable(Exception):
    """The target is not a final linear layer whose output is the model output."""


# --------------------------------------------------------------------------------------------------
# Target parameters


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


def _head_for(model: nn.Module, names: Sequence[str]) -> tuple[nn.Linear, bool, bool]:
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


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class InfluenceResult:
    influence: torch.Tensor  # [N], on CPU
    fisher: torch.Tensor  # [P] diagonal Fisher including λ, θ flattened in target order
    mean_grad: torch.Tensor  # [P]
    param_names: list[str]
    path: str  # "closed_form" | "func" | "loop"


# --------------------------------------------------------------------------------------------------
# Closed form for a final linear layer


def _forward_capture(model: nn.Module, head: nn.Linear, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """Logits and the head's input from one forward pass; checks that the head output is the logits."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["h"], seen["z"] = inp[0], out

    handle = head.register_forward_hook(hook)
    try:
        z = logits(model, batch)
    finally:
        handle.remove()
    if "z" not in seen or seen["z"] is not z:
        raise ClosedFormNotApplicable("the target linear layer's output is not the model output")
    return z, seen["h"]


def _augment(h: torch.Tensor, use_w: bool, use_b: bool) -> torch.Tensor:
    """[h, 1]: folding the bias in as a column of ones makes the bias gradient part of one product."""
    parts = [h] if use_w else []
    if use_b:
        parts.append(torch.ones_like(h[..., :1]))
    return torch.cat(parts, -1)


def _flatten_cf(x: torch.Tensor, d: int, use_w: bool, use_b: bool) -> torch.Tensor:
    """[..., C, K] in [W | b] column layout → [..., P] in parameter order (weight rows, then bias)."""
    lead = x.shape[:-2]
    parts = []
    if use_w:
        parts.append(x[..., :d].reshape(*lead, -1))
    if use_b:
        parts.append(x[..., -1])
    return torch.cat(parts, -1)


def _residuals(
    z: torch.Tensor, batch: dict[str, torch.Tensor], task: Task, dtype: torch.dtype
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


def _cf_batches(
    model: nn.Module,
    data: Dataset,
    task: Task,
    head: nn.Linear,
    use_w: bool,
    use_b: bool,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(residuals E, augmented head inputs H) per forward batch (``batch_size`` bounded by the logits)."""
    for batch in iterate_batches(data, batch_size, device=device, num_outputs=head.out_features):
        z, h = _forward_capture(model, head, batch)
        dtype = torch.promote_types(h.dtype, torch.float32)
        e = _residuals(z, batch, task, dtype)
        hh = h.to(dtype)
        if task == "causal-lm":
            if hh.dim() != 3:
                raise ClosedFormNotApplicable("causal-LM head input is not [B, T, d]")
            hh = hh[:, :-1]
        elif hh.dim() != 2:
            raise ClosedFormNotApplicable("classification head input is not [B, d]")
        yield e, _augment(hh, use_w, use_b)


@torch.no_grad()
def _closed_form(
    model: nn.Module,
    data: Dataset,
    task: Task,
    names: list[str],
    fisher_lambda: float,
    batch_size: int,
    device: torch.device,
) -> InfluenceResult:
    head, use_w, use_b = _head_for(model, names)
    n = num_samples(data)
    d = head.in_features
    f_sum: torch.Tensor | None = None
    g_sum: torch.Tensor | None = None
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for e, hh in _cf_batches(model, data, task, head, use_w, use_b, batch_size, device):
        if task == "classification":
            # F = (E²)ᵀ H² / N and ḡ = Eᵀ H / N: the B×C×K per-sample gradients are never formed.
            fs, gs = (e * e).T @ (hh * hh), e.T @ hh
            kept.append((e, hh))  # [N, C] and [N, K]: small, reused for the influence below
        else:
            # G_i = Σ_t e_t h_tᵀ; its square needs G_i itself, so form it in bounded chunks of samples.
            gs = torch.einsum("btc,btk->ck", e, hh)
            per = max(1, MAX_CHUNK_ELEMENTS // (e.shape[-1] * hh.shape[-1]))
            fs = torch.zeros_like(gs)
            for s in range(0, e.shape[0], per):
                g = torch.einsum("btc,btk->bck", e[s : s + per], hh[s : s + per])
                fs += (g * g).sum(0)
        f_sum = fs if f_sum is None else f_sum + fs
        g_sum = gs if g_sum is None else g_sum + gs
    assert f_sum is not None and g_sum is not None
    fisher = f_sum / n + fisher_lambda
    mean_grad = g_sum / n
    m = mean_grad / fisher  # ḡ ⊙ F⁻¹ as a C×K matrix
    if task == "classification":
        # I_i = −e_iᵀ M h_i, all samples at once.
        infl = torch.cat([-((e @ m) * hh).sum(-1) for e, hh in kept])
    else:
        # Second forward pass: storing [N, T, V] residuals would cost more than recomputing them.
        infl = torch.cat(
            [
                -((e @ m) * hh).sum((-2, -1))
                for e, hh in _cf_batches(model, data, task, head, use_w, use_b, batch_size, device)
            ]
        )
    return InfluenceResult(
        influence=infl.float().cpu(),
        fisher=_flatten_cf(fisher, d, use_w, use_b).cpu(),
        mean_grad=_flatten_cf(mean_grad, d, use_w, use_b).cpu(),
        param_names=names,
        path="closed_form",
    )


def _closed_form_grads(
    model: nn.Module, data: Dataset, task: Task, names: list[str], batch_size: int, device: torch.device
) -> torch.Tensor:
    """Materialised per-sample gradients from the closed form (tests and small sets only)."""
    head, use_w, use_b = _head_for(model, names)
    rows = []
    with torch.no_grad():
        for e, hh in _cf_batches(model, data, task, head, use_w, use_b, batch_size, device):
            g = (
                torch.einsum("bc,bk->bck", e, hh)
                if task == "classification"
                else torch.einsum("btc,btk->bck", e, hh)
            )
            rows.append(_flatten_cf(g, head.in_features, use_w, use_b))
    return torch.cat(rows)


# --------------------------------------------------------------------------------------------------
# torch.func and the reference loop


def func_chunk_size(model: nn.Module, data: Dataset, names: Sequence[str], chunk_size: int) -> int:
    """Samples per torch.func chunk: at most ``chunk_size``, with c·P ≤ ``MAX_CHUNK_ELEMENTS``
    (P = number of target parameter elements) and the chunk's logits within the forward budget;
    at least 1."""
    if chunk_size < 1:
        raise ParamsError(f"chunk_size must be at least 1, got {chunk_size}")
    p = sum(t.numel() for t in target_params(model, names))
    by_grads = max(1, MAX_CHUNK_ELEMENTS // max(1, p))
    return batch_size_for(data, min(chunk_size, by_grads), output_size(model))


def _func_chunks(
    model: nn.Module, data: Dataset, task: Task, names: list[str], chunk_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Per-sample gradients [c, P] for chunks of up to ``chunk_size`` samples (vmap over grad);
    :func:`func_chunk_size` lowers c where [c, P] or the chunk's logits would be too large."""
    params = {n: p.detach() for n, p in zip(names, target_params(model, names), strict=True)}
    chunk = func_chunk_size(model, data, names, chunk_size)

    def sample_loss(tp: dict[str, torch.Tensor], sample: dict[str, torch.Tensor]) -> torch.Tensor:
        one = {k: v.unsqueeze(0) for k, v in sample.items()}

        def fwd(*args: Any, **kwargs: Any) -> Any:
            return functional_call(model, tp, args, kwargs)

        return loss_from_logits(logits(model, one, forward=fwd), one, task)[0]

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0))
    for batch in iterate_batches(data, chunk, device=device):
        g = per_sample(params, batch)
        yield torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1)


def _loop_rows(
    model: nn.Module, data: Dataset, task: Task, names: list[str], device: torch.device
) -> Iterator[torch.Tensor]:
    """Reference: one backward per sample, as the official code does (``grad_z_last``)."""
    params = target_params(model, names)
    for i in range(num_samples(data)):
        one = to_device(take(data, slice(i, i + 1)), device)
        loss = loss_from_logits(logits(model, one), one, task)[0]
        # A parameter outside the forward has a zero gradient, as torch.func.grad gives it.
        gs = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        yield torch.cat([g.reshape(-1) for g in gs]).unsqueeze(0)


def _from_rows(
    make_rows: Callable[[], Iterator[torch.Tensor]], n: int, names: list[str], fisher_lambda: float, path: str
) -> InfluenceResult:
    """F, ḡ and I from streamed per-sample gradient rows; rows are cached if small, else recomputed."""
    f_sum: torch.Tensor | None = None
    g_sum: torch.Tensor | None = None
    cache: list[torch.Tensor] | None = []
    size = 0
    for rows in make_rows():
        sq, s1 = (rows * rows).sum(0), rows.sum(0)
        f_sum = sq if f_sum is None else f_sum + sq
        g_sum = s1 if g_sum is None else g_sum + s1
        size += rows.numel()
        if cache is not None and size <= MAX_CHUNK_ELEMENTS:
            cache.append(rows)
        else:
            cache = None  # too large to keep: the second pass recomputes the rows
    assert f_sum is not None and g_sum is not None
    fisher = f_sum / n + fisher_lambda
    mean_grad = g_sum / n
    m = mean_grad / fisher
    infl = torch.cat([-(rows @ m) for rows in (cache if cache is not None else make_rows())])
    return InfluenceResult(infl.float().cpu(), fisher.cpu(), mean_grad.cpu(), names, path)


# --------------------------------------------------------------------------------------------------
# Public API


class _EvalMode:
    """Eval mode (BatchNorm uses running stats, no dropout) and grads on θ only, restored afterwards."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model, self.names = model, set(names)

    def __enter__(self) -> None:
        self.training = self.model.training
        self.flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.model.eval()
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.names)

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.training)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.flags[n])


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def per_sample_gradients(
    model: nn.Module,
    data: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    method: GradMethod = "func",
    chunk_size: int = 64,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample gradients [N, P] of θ (flattened in target order) by the chosen path.

    ``auto`` takes the closed form where it applies, else torch.func, as :func:`influence_scores`.
    """
    task = task or infer_task(data)
    names = resolve_target(model, target)
    dev = _device_of(model, device)
    with _EvalMode(model, names):
        if method in ("closed_form", "auto"):
            try:
                return _closed_form_grads(model, data, task, names, batch_size, dev)
            except ClosedFormNotApplicable as exc:
                if method == "closed_form":
                    raise ParamsError(f"closed-form gradients do not apply: {exc}") from exc
            method = "func"
        if method == "func":
            return torch.cat(list(_func_chunks(model, data, task, names, chunk_size, dev)))
        if method == "loop":
            return torch.cat(list(_loop_rows(model, data, task, names, dev)))
    raise ParamsError(f"unknown gradient method {method!r}; use auto, closed_form, func or loop")


def influence_scores(
    model: nn.Module,
    data: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    fisher_lambda: float = 0.01,
    method: GradMethod = "auto",
    chunk_size: int = 64,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> InfluenceResult:
    """IMU steps 1–3: influence I_i = −(g_i ⊙ F⁻¹)·ḡ of every sample of ``data`` on θ.

    ``auto`` takes the closed form when θ is a final linear layer (not tied) whose output is the
    model output, else torch.func. ``batch_size`` (forward passes) and ``chunk_size`` (torch.func
    samples per vmap) are upper bounds: a causal LM's batches shrink to keep their logits within
    ``tasks.MAX_LOGIT_ELEMENTS``, and torch.func chunks to keep [c, P] within ``MAX_CHUNK_ELEMENTS``.
    """
    task = task or infer_task(data)
    names = resolve_target(model, target)
    dev = _device_of(model, device)
    n = num_samples(data)
    if n == 0:
        raise ParamsError("the forget set is empty")
    with _EvalMode(model, names):
        if method in ("auto", "closed_form"):
            try:
                return _closed_form(model, data, task, names, fisher_lambda, batch_size, dev)
            except ClosedFormNotApplicable as exc:
                if method == "closed_form":
                    raise ParamsError(f"closed-form influence does not apply: {exc}") from exc
            method = "func"
        if method == "func":
            return _from_rows(
                lambda: _func_chunks(model, data, task, names, chunk_size, dev),
                n,
                names,
                fisher_lambda,
                "func",
            )
        if method == "loop":
            return _from_rows(
                lambda: _loop_rows(model, data, task, names, dev), n, names, fisher_lambda, "loop"
            )
    raise ParamsError(f"unknown gradient method {method!r}; use auto, closed_form, func or loop")


def select_weights(
    influence: torch.Tensor, top_fraction: float = 0.1, clip_quantile: float = 0.93
) -> tuple[torch.Tensor, torch.Tensor]:
    """IMU steps 4–5: weights [N] (zero where not selected) and the selected indices, largest |I| first."""
    n = influence.shape[0]
    weights = torch.zeros(n, dtype=torch.float32)
    neg = torch.nonzero(influence < 0).squeeze(1)
    if neg.numel() == 0:
        return weights, neg
    k = max(int(neg.numel() * top_fraction), 1)  # official: fraction of the negative ones, truncated
    order = torch.argsort(influence[neg].abs(), descending=True, stable=True)[:k]
    selected = neg[order]
    w = influence[selected].abs().sqrt().float()
    w = w.clamp(max=torch.quantile(w, clip_quantile))
    weights[selected] = w
    return weights, selected


def imu_sample_weights(
    model: nn.Module,
    forget: Dataset,
    task: Task | None = None,
    *,
    target: Target = None,
    top_fraction: float = 0.1,
    clip_quantile: float = 0.93,
    fisher_lambda: float = 0.01,
    method: GradMethod = "auto",
    chunk_size: int = 64,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """IMU steps 1–5 on the forget set: per-sample weights [N] (zeros for unselected) and info."""
    res = influence_scores(
        model,
        forget,
        task,
        target=target,
        fisher_lambda=fisher_lambda,
        method=method,
        chunk_size=chunk_size,
        batch_size=batch_size,
        device=device,
    )
    weights, selected = select_weights(res.influence, top_fraction, clip_quantile)
    infl = res.influence.double()
    info: dict[str, Any] = {
        "n_samples": int(infl.numel()),
        "n_negative": int((infl < 0).sum()),
        "n_selected": int(selected.numel()),
        "influence_path": res.path,
        "target_params": res.param_names,
        "influence_min": float(infl.min()),
        "influence_max": float(infl.max()),
        "influence_mean": float(infl.mean()),
        "weight_max": float(weights.max()) if selected.numel() else 0.0,
    }
    return weights, info
