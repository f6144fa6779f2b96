"""Per-example membership testing: a likelihood-ratio attack (LiRA, Carlini et al. 2022) with
reference models.

The population loss attack (``verification.mia_auc``) asks whether forget samples have lower losses
than unseen data *on average*; it misses a model whose forget samples each sit a little above where
a model that never saw them would put *that* sample (an easy sample has a low loss anyway). LiRA
asks the per-example question. For every sample it fits a Gaussian to the logit-scaled confidence
φ = log p_y − log(1 − p_y) that reference models give it when they did not train on it (OUT), and,
with reference models that did (IN), a second one; the target model's φ is then scored against them:

* offline (OUT models only): score = (φ − μ_out) / σ_out, one-sided (a member's φ is higher);
* online (every sample has IN and OUT models, e.g. each reference trained on a random half):
  score = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²).

The result is the true-positive rate on the members (the forget samples) at a fixed false-positive
rate on held-out non-members: a model retrained without the forget samples scores TPR ≈ FPR.
With few references, one variance pooled over all samples (``fixed_variance``) is steadier than a
variance per sample (LiRA §VI); the mean is always per sample.

The API takes the reference models and the data, so that a caller that keeps K reference models per
model (trained without some samples) can test any later version of it. Every step is a batched
forward pass per model, then tensor maths over [K, N]: no loop over samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unlearning.errors import ParamsError
from unlearning.losses import lm_targets
from unlearning.samples import infer_task, num_samples
from unlearning.types import Dataset, Task
from unlearning.verification import map_batches, mia_auc

DEFAULT_FPRS = (0.01, 0.05)
# Below this many OUT references per sample, the variance is pooled over samples by default.
FIXED_VARIANCE_BELOW = 16
_MIN_STD = 1e-3  # a floor: a sample every reference scores alike must not give infinite scores


def confidence_from_logits(
    z: torch.Tensor, target: torch.Tensor, *, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """log p_y − log(1 − p_y) = z_y − logsumexp_{j≠y} z_j, from logits [..., C], stable (in float64
    by default; differentiable, so an objective may use it in float32)."""
    z = z.to(dtype)
    zy = z.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = z.scatter(-1, target.unsqueeze(-1), float("-inf"))
    return zy - torch.logsumexp(others, dim=-1)


def logit_confidence(
    model: nn.Module,
    data: Dataset,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """φ [N] (float64, CPU), model in eval mode (its mode is restored).

    Classification: the logit-scaled confidence of the label. Causal LM: its mean over the tokens the
    loss counts (each token's confidence in the true next token), one value per sequence.
    """
    task = task or infer_task(data)

    def phi(z: torch.Tensor, batch: Dataset) -> torch.Tensor:
        if task == "classification":
            return confidence_from_logits(z, batch["labels"].long())
        targets, valid = lm_targets(batch)
        conf = confidence_from_logits(z[:, :-1], targets.long())
        v = valid.to(conf.dtype)
        return (conf * v).sum(1) / v.sum(1).clamp_min(1.0)

    out = map_batches(model, data, phi, device=device, batch_size=batch_size)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _masked_stats(
    phi: torch.Tensor, mask: torch.Tensor, fixed_variance: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and std of ``phi`` [K, N] over the references where ``mask`` [K, N] is True."""
    m = mask.to(phi.dtype)
    count = m.sum(0)
    mean = (phi * m).sum(0) / count.clamp_min(1.0)
    sq = ((phi - mean) ** 2) * m
    if fixed_variance:
        # One variance for all samples: pooled over every (reference, sample) pair.
        pooled = sq.sum() / (count - 1).clamp_min(0).sum().clamp_min(1.0)
        std = pooled.sqrt().expand_as(mean)
    else:
        std = (sq.sum(0) / (count - 1).clamp_min(1.0)).sqrt()
    return mean, std.clamp_min(_MIN_STD)


def _gauss_logpdf(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def lira_scores(
    target_phi: torch.Tensor,
    reference_phi: torch.Tensor,
    in_mask: torch.Tensor | None = None,
    *,
    fixed_variance: bool | None = None,
) -> tuple[torch.Tensor, str, bool]:
    """Membership scores [N] (higher = more likely a member), the mode and the variance choice.

    ``target_phi`` [N]; ``reference_phi`` [K, N] (φ of each reference on each sample); ``in_mask``
    [K, N] True where reference k trained on sample n (None: every reference is OUT for every
    sample). Online when every sample has at least two IN and two OUT references, else offline.
    """
    if reference_phi.dim() != 2 or reference_phi.shape[1] != target_phi.shape[0]:
        raise ParamsError("reference_phi must be [K, N] with N the number of samples")
    k = reference_phi.shape[0]
    in_mask = torch.zeros(reference_phi.shape, dtype=torch.bool) if in_mask is None else in_mask.bool()
    out_mask = ~in_mask
    n_in, n_out = in_mask.sum(0), out_mask.sum(0)
    if bool((n_out < 1).any()):
        raise ParamsError("every sample needs at least one reference model that did not train on it")
    if fixed_variance is None:
        fixed_variance = int(n_out.min()) < FIXED_VARIANCE_BELOW or k < 2
    if int(n_out.min()) < 2:
        fixed_variance = True  # one OUT value per sample has no variance of its own
    phi, x = reference_phi.double(), target_phi.double()
    mu_out, sd_out = _masked_stats(phi, out_mask, fixed_variance)
    if bool((n_in >= 2).all()) and bool((n_out >= 2).all()):
        mu_in, sd_in = _masked_stats(phi, in_mask, fixed_variance)
        return _gauss_logpdf(x, mu_in, sd_in) - _gauss_logpdf(x, mu_out, sd_out), "online", fixed_variance
    return (x - mu_out) / sd_out, "offline", fixed_variance


def tpr_at_fpr(
    member_scores: torch.Tensor, nonmember_scores: torch.Tensor, fprs: Sequence[float] = DEFAULT_FPRS
) -> dict[float, float]:
    """TPR on members at each FPR on non-members: threshold = the non-members' (1 − FPR) quantile
    (the next higher score, so the realised FPR never exceeds the one asked for)."""
    non = nonmember_scores.double()
    mem = member_scores.double()
    out: dict[float, float] = {}
    for fpr in fprs:
        thr = torch.quantile(non, 1.0 - fpr, interpolation="higher")
        out[float(fpr)] = float((mem > thr).double().mean())
    return out


@dataclass(frozen=True)
class MembershipResult:
    """What :func:`lira_test` found on the members (forget samples) against held-out non-members."""

    tpr_at_fpr: dict[float, float]  # {0.01: TPR, 0.05: TPR}; a model that never saw them: ≈ FPR
    auc: float  # of the scores, members vs non-members (0.5: indistinguishable)
    mode: str  # "offline" | "online"
    fixed_variance: bool
    n_references: int
    n_members: int
    n_nonmembers: int
    member_scores: torch.Tensor = field(repr=False)
    nonmember_scores: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tpr_at_fpr": {f"{k:g}": v for k, v in self.tpr_at_fpr.items()},
            "auc": self.auc,
            "mode": self.mode,
            "fixed_variance": self.fixed_variance,
            "n_references": self.n_references,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
        }


def reference_confidences(
    references: Sequence[nn.Module],
    data: Dataset,
    *,
    task: Task | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """φ of every reference model on every sample: [K, N] (one batched pass per model)."""
    if not references:
        raise ParamsError("membership testing needs at least one reference model")
    return torch.stack([logit_confidence(r, data, task=task, device=device) for r in references])


def lira_test(
    target: nn.Module,
    members: Dataset,
    nonmembers: Dataset,
    references: Sequence[nn.Module] | torch.Tensor,
    *,
    in_masks: torch.Tensor | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    fixed_variance: bool | None = None,
    task: Task | None = None,
    device: torch.device | str | None = None,
) -> MembershipResult:
    """LiRA on ``target``: are the ``members`` (e.g. the forget set) told apart from ``nonmembers``?

    ``references``: K reference models (or their φ already computed, [K, N_members + N_nonmembers],
    members first, to reuse across targets). ``in_masks`` [K, N_members + N_nonmembers]: True where
    reference k trained on that sample; None means no reference trained on any of them (offline).
    """
    task = task or infer_task(members)
    nm, nn_ = num_samples(members), num_samples(nonmembers)
    if nm == 0 or nn_ == 0:
        raise ParamsError("membership testing needs members and non-members")
    if isinstance(references, torch.Tensor):
        ref_phi = references
    else:
        ref_phi = torch.cat(
            [
                reference_confidences(references, members, task=task, device=device),
                reference_confidences(references, nonmembers, task=task, device=device),
            ],
            dim=1,
        )
    phi = torch.cat(
        [
            logit_confidence(target, members, task=task, device=device),
            logit_confidence(target, nonmembers, task=task, device=device),
        ]
    )
    scores, mode, fixed = lira_scores(phi, ref_phi, in_masks, fixed_variance=fixed_variance)
    mem, non = scores[:nm], scores[nm:]
    # mia_auc ranks "lower loss ⇒ member": negated scores turn "higher score ⇒ member" into that.
    return MembershipResult(
        tpr_at_fpr=tpr_at_fpr(mem, non, fprs),
        auc=mia_auc(-mem, -non),
        mode=mode,
        fixed_variance=fixed,
        n_references=int(ref_phi.shape[0]),
        n_members=nm,
        n_nonmembers=nn_,
        member_scores=mem,
        nonmember_scores=non,
    )


# --- reference sets kept for later tests (the service's ``service/references``) ------------------


def balanced_in_masks(k: int, n: int, seed: int) -> torch.Tensor:
    """[K, N] bool: which of K references trains on which of N samples, each sample IN for exactly
    ⌊K/2⌋ of them (chosen at random per sample), so every sample has ⌈K/2⌉ OUT references whatever
    later asks about it, and each reference trains on about half the data."""
    if k < 2 or n < 1:
        raise ParamsError("a reference set needs K ≥ 2 references and at least one sample")
    g = torch.Generator().manual_seed(int(seed))
    ranks = torch.rand(n, k, generator=g).argsort(dim=1).argsort(dim=1)
    return (ranks < k // 2).T.contiguous()


# Two primes below 2^31 and fixed multipliers: each key part is a linear hash mod p computed in
# int64 without overflow; together ~62 bits, so two different samples collide with chance ~2^-62.
_PRIMES = (2_147_483_629, 2_147_483_587)
_KEY_SEED = 0x1D5A


def sample_keys(data: Dataset) -> torch.Tensor:
    """An int64 key per sample [N] from its exact contents (inputs as float32 bits, or token ids,
    and the label), so that a sample uploaded later is found again in the data a reference set
    was trained on. Vectorised: two modular dot products over the flattened rows."""
    x = data["inputs"] if "inputs" in data else data["input_ids"]
    x = x.reshape(x.shape[0], -1)
    bits = x.float().contiguous().view(torch.int32).long() if x.is_floating_point() else x.long()
    if "labels" in data:
        bits = torch.cat([bits, data["labels"].reshape(-1, 1).long()], dim=1)
    g = torch.Generator().manual_seed(_KEY_SEED)
    parts = []
    for p in _PRIMES:
        mult = torch.randint(1, p, (bits.shape[1],), generator=g)
        parts.append((((bits % p) * mult) % p).sum(1) % p)
    return parts[0] * _PRIMES[1] + parts[1]


def match_keys(known: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Position in ``known`` of each ``query`` key, −1 where absent (the first of duplicates)."""
    if known.numel() == 0:
        return torch.full_like(query, -1)
    order = torch.argsort(known, stable=True)
    sorted_keys = known[order]
    at = torch.searchsorted(sorted_keys, query).clamp_max(known.numel() - 1)
    return torch.where(sorted_keys[at] == query, order[at], torch.full_like(query, -1))


def retrained_level(
    reference_phi: torch.Tensor,
    in_mask: torch.Tensor,
    n_members: int,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, Any]:
    """What a model retrained without the members scores: each reference j in turn as the target,
    on the members it did not train on, against the other references (leave one out) and the
    non-members. ``reference_phi``/``in_mask`` [K, M + E], members first. Returns the TPR at each
    FPR averaged over the references (weighted by how many members each one left out), and the
    per-reference figures."""
    k = reference_phi.shape[0]
    per: list[dict[str, Any]] = []
    totals = torch.zeros(len(fprs), dtype=torch.float64)
    n_total = 0
    for j in range(k):
        others = torch.arange(k) != j
        ref, mask = reference_phi[others], in_mask[others]
        out_members = ~in_mask[j, :n_members] & (~mask[:, :n_members]).any(0)
        m = int(out_members.sum())
        if m == 0:
            continue
        sel = torch.cat(
            [torch.nonzero(out_members).flatten(), torch.arange(n_members, reference_phi.shape[1])]
        )
        scores, _, _ = lira_scores(reference_phi[j, sel], ref[:, sel], mask[:, sel])
        tpr = tpr_at_fpr(scores[:m], scores[m:], fprs)
        per.append({"reference": j, "n_members": m, "tpr_at_fpr": {f"{f:g}": v for f, v in tpr.items()}})
        totals += m * torch.tensor(list(tpr.values()), dtype=torch.float64)
        n_total += m
    mean = {f"{f:g}": float(totals[i] / n_total) for i, f in enumerate(fprs)} if n_total else {}
    return {"tpr_at_fpr": mean, "n_members": n_total, "per_reference": per}


__all__ = [
    "DEFAULT_FPRS",
    "MembershipResult",
    "balanced_in_masks",
    "lira_scores",
    "lira_test",
    "logit_confidence",
    "match_keys",
    "reference_confidences",
    "retrained_level",
    "sample_keys",
    "tpr_at_fpr",
]
