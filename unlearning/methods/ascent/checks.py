"""The ascent's checks: θ evaluated on the forget, utility and unseen sets, and what each check decides.

A check gives forget accuracy and loss, eval accuracy and loss on the utility set, and (scope
"class") the accuracy on the forgotten classes' eval samples; without a stopping rule (checks for
the utility guard alone) only the utility set's. The MIA AUC (a rank statistic: a sort
per check) is computed only where it decides (rule "mia") or is reported (the accepted and the
rejected check): the losses it needs travel with the check until then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unlearning.methods.ascent.params import AscentParams, StopRule
from unlearning.samples import num_samples
from unlearning.types import Dataset, Task
from unlearning.verification import mia_auc, per_sample_metrics

# (forget losses, unseen losses): what the MIA AUC of a check compares.
MiaLosses = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Check:
    metrics: dict[str, float]
    losses: MiaLosses | None


def _join(sets: list[Dataset]) -> Dataset | None:
    """The sets concatenated, or None when their keys, dtypes or per-sample shapes differ."""
    first = sets[0]
    for d in sets[1:]:
        if set(d) != set(first) or any(
            d[k].shape[1:] != first[k].shape[1:] or d[k].dtype != first[k].dtype for k in first
        ):
            return None
    return {k: torch.cat([d[k] for d in sets]) for k in first} if len(sets) > 1 else dict(first)


class Checker:
    """Evaluates the model at a check and says whether the stopping rule's target is reached."""

    def __init__(
        self,
        net: nn.Module,
        forget: Dataset,
        utility: Dataset | None,
        unseen: Dataset | None,
        *,
        mode: StopRule | None,
        params: AscentParams,
        task: Task,
        device: torch.device,
        guard_only: bool = False,
    ) -> None:
        self.net, self.mode, self.params, self.task, self.device = net, mode, params, task, device
        # Checks that serve the utility guard alone (no stopping rule) measure only the utility set:
        # the forget set is most of a check's cost, and nothing would read it.
        self.guard_only = guard_only and utility is not None
        self.has_utility = utility is not None
        self.has_unseen = unseen is not None and not self.guard_only
        # Forget, utility and unseen sets (the unseen set is the utility set in the samples scope):
        # joined into one set they take one pass (one head product when features are cached).
        sets = (utility,) if self.guard_only else (forget, utility, unseen if unseen is not utility else None)
        self.parts = [d for d in sets if d is not None]
        self.joined = _join(self.parts)
        self.sizes = [num_samples(d) for d in self.parts]
        self.count = 0

    def __call__(self) -> Check:
        self.count += 1
        if self.joined is not None:
            ls, cs = per_sample_metrics(self.net, self.joined, task=self.task, device=self.device)
            pairs = list(zip(ls.split(self.sizes), cs.split(self.sizes), strict=True))
        else:
            pairs = [per_sample_metrics(self.net, d, task=self.task, device=self.device) for d in self.parts]
        if self.guard_only:
            el, ec = pairs[0]
            utility = {"eval_accuracy": float(ec.double().mean()), "eval_loss": float(el.double().mean())}
            return Check(utility, None)
        (fl, fc), rest = pairs[0], pairs[1:]
        res = {"forget_accuracy": float(fc.double().mean()), "forget_loss": float(fl.double().mean())}
        if self.has_utility:
            el, ec = rest[0]
            res["eval_accuracy"], res["eval_loss"] = float(ec.double().mean()), float(el.double().mean())
        losses = None
        if self.has_unseen:
            xl, xc = rest[-1]  # the utility set itself in the samples scope
            losses = (fl, xl)
            if self.mode == "mia":
                res["mia_auc"] = mia_auc(fl, xl)
            if self.params.scope == "class":
                res["forgotten_classes_eval_accuracy"] = float(xc.double().mean())
        return Check(res, losses)

    def reached(self, metrics: dict[str, float]) -> bool:
        """The stopping rule's target (only called with a rule)."""
        if self.mode == "eval_accuracy":
            return metrics["forget_accuracy"] <= metrics["eval_accuracy"]
        if self.mode == "forget_accuracy":
            target = self.params.forget_accuracy_target
            assert target is not None  # plan_checks rejects the rule without a target
            return metrics["forget_accuracy"] <= target
        return metrics["mia_auc"] <= self.params.mia_target

    def reported(self, check: Check | None) -> dict[str, float]:
        """A check's metrics as reported: with its MIA AUC, computed now if the rule did not need it."""
        if check is None:
            return {}
        res = check.metrics
        if check.losses is not None and "mia_auc" not in res:
            res = dict(res)
            res["mia_auc"] = mia_auc(*check.losses)
            if self.params.scope == "class":  # keep the key order of a full check
                res["forgotten_classes_eval_accuracy"] = res.pop("forgotten_classes_eval_accuracy")
        return res


class UtilityGuard:
    """Trips once eval accuracy falls more than ``max_drop`` below its value at the first check."""

    def __init__(self, max_drop: float) -> None:
        self.max_drop = max_drop
        self.base: float | None = None

    def trips(self, metrics: dict[str, float]) -> bool:
        if self.base is None:
            self.base = metrics["eval_accuracy"]
        return metrics["eval_accuracy"] < self.base - self.max_drop
