"""What the ascent's checks compare: the stopping rule and the eval sets of the guard and the MIA AUC.

Decided from the params and the data before any work, so that a combination that cannot run fails
at once (ParamsError). With ``scope="class"`` the eval set splits by class: the guard and the eval
metrics use the classes not forgotten, the MIA AUC compares the forget set with the eval samples of
the forgotten classes (a model retrained without them treats both as unseen data of a class it
never learned).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.errors import ParamsError
from unlearning.methods.ascent.params import AscentParams, StopRule
from unlearning.samples import infer_task, num_samples, take
from unlearning.types import Dataset


@dataclass(frozen=True)
class CheckPlan:
    mode: StopRule | None  # None: no checks, a fixed number of epochs
    classes: list[int] | None  # the forgotten classes (scope "class")
    utility: Dataset | None  # eval samples of the guard and the eval metrics
    unseen: Dataset | None  # eval samples the MIA AUC compares the forget set with


def _early_stop_mode(params: AscentParams, eval: Dataset | None) -> StopRule | None:
    """The stopping rule; raises ParamsError for a combination that cannot run (before any work)."""
    mode = params.early_stop
    if mode == "auto":
        if params.scope == "class":
            mode = "forget_accuracy"
        else:
            return "eval_accuracy" if eval is not None else None
    if mode in ("eval_accuracy", "mia") and eval is None:
        raise ParamsError(f"early_stop={mode!r} needs an eval set")
    if mode == "forget_accuracy" and params.forget_accuracy_target is None:
        raise ParamsError('early_stop="forget_accuracy" needs forget_accuracy_target (or scope="class")')
    return mode


def split_by_class(forget: Dataset, eval: Dataset | None) -> tuple[list[int], Dataset | None, Dataset | None]:
    """(forgotten classes, eval samples of the other classes, eval samples of the forgotten classes).

    The forgotten classes are the labels of the forget set; an empty part of the eval set is None.
    """
    if "labels" not in forget or infer_task(forget) != "classification":
        raise ParamsError('scope="class" needs a classification forget set with labels')
    classes = torch.unique(forget["labels"])
    if eval is None:
        return classes.tolist(), None, None
    forgotten = torch.isin(eval["labels"], classes.to(eval["labels"].device))
    kept, gone = take(eval, ~forgotten), take(eval, forgotten)
    return classes.tolist(), kept if num_samples(kept) else None, gone if num_samples(gone) else None


def plan_checks(params: AscentParams, forget: Dataset, eval: Dataset | None) -> CheckPlan:
    """The plan of the checks; raises ParamsError for a combination that cannot run."""
    mode = _early_stop_mode(params, eval)
    if params.scope == "samples":
        return CheckPlan(mode, None, eval, eval)
    classes, utility, unseen = split_by_class(forget, eval)
    if mode == "eval_accuracy" and utility is None:
        raise ParamsError(
            'early_stop="eval_accuracy" with scope="class" needs eval samples of classes not forgotten'
        )
    if mode == "mia" and unseen is None:
        raise ParamsError('early_stop="mia" with scope="class" needs eval samples of the forgotten classes')
    return CheckPlan(mode, classes, utility, unseen)
