"""What the ascent compares and minimises: the stopping rule, the eval sets of the guard, the MIA
AUC and the anchor, and the forget objective.

Decided from the params and the data before any work, so that a combination that cannot run fails
at once (ParamsError). The eval set here is what the method sees: ``unlearn()`` gives methods the
anchor half of the caller's eval set and measures its report on the other half. With
``scope="class"`` the eval set splits by class: the guard, the eval metrics and the anchor use the
classes not forgotten, the MIA AUC compares the forget set with the eval samples of the forgotten
classes (a model retrained without them treats both as unseen data of a class it never learned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from unlearning.errors import ParamsError
from unlearning.methods.ascent.params import (
    NO_ANCHOR_EPOCHS,
    OBJECTIVE_DEFAULTS,
    AscentParams,
    MatchSpace,
    ObjectiveName,
    StopRule,
)
from unlearning.samples import infer_task, num_samples, take
from unlearning.types import Dataset, Task


@dataclass(frozen=True)
class CheckPlan:
    mode: StopRule | None  # None: no checks, a fixed number of epochs
    classes: list[int] | None  # the forgotten classes (scope "class")
    utility: Dataset | None  # eval samples of the guard and the eval metrics
    unseen: Dataset | None  # eval samples the MIA AUC compares the forget set with
    objective: ObjectiveName = "ascent"  # the forget objective, "auto" resolved
    anchor: Dataset | None = None  # eval samples of the KL term to the original model (None: no term)
    batch_size: int = 256  # of the forget samples, resolved (OBJECTIVE_DEFAULTS)
    anchor_weight: float = 1.0  # resolved (OBJECTIVE_DEFAULTS)
    lr: float = 1e-3  # resolved (OBJECTIVE_DEFAULTS)
    anchor_mixup: bool = False  # resolved (OBJECTIVE_DEFAULTS)
    anchor_batch_size: int = 256  # resolved (OBJECTIVE_DEFAULTS)
    anchor_copies: int = 0  # resolved (OBJECTIVE_DEFAULTS)
    epochs: int = 2  # of a run without a stopping rule, resolved (OBJECTIVE_DEFAULTS)
    match_on: MatchSpace = "loss"  # what objective "match" matches, resolved


def _early_stop_mode(
    params: AscentParams, eval: Dataset | None, objective: ObjectiveName, task: Task
) -> StopRule | None:
    """The stopping rule; raises ParamsError for a combination that cannot run (before any work).

    ``"auto"``:
    * none for matching: its pull ends at each sample's target (confidence matching leaves a
      sample alone below it; loss matching turns around past it), so the longer it runs, the
      closer the forget samples sit to the unseen ones while the KL term repairs the rest (loss
      matching stopped at the first check where forget accuracy ≤ eval accuracy ended 2 points of
      Avg Gap worse on MNIST-1D);
    * forget accuracy ≤ target for ``scope="class"``;
    * none for a causal LM: NPO runs its fixed epochs, as it is used on LMs, under the utility
      guard. A deletion from an LM is usually a whole source, and a model that never saw a source
      predicts it far worse than held-out text of the sources it knows: "forget accuracy ≤ eval
      accuracy" aims at the latter, and on the Markov task one epoch reached it on two seeds of
      three, at forget accuracy 0.36 / 0.32 where retraining scores 0.05 (row `ga-lm-eval-stop` of
      the markov settings in benchmarks/RESULTS.md). A caller deleting memorised samples of a
      shared distribution can ask for ``early_stop="eval_accuracy"``;
    * else forget accuracy ≤ eval accuracy when there is an eval set.
    """
    mode = params.early_stop
    if mode == "auto":
        if params.scope == "class":
            mode = "forget_accuracy"
        elif objective == "match" or task == "causal-lm":
            return None
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


def resolve_objective(params: AscentParams, task: Task, unseen: Dataset | None) -> ObjectiveName:
    """The forget objective ``"auto"`` stands for.

    * Classification, samples scope, with unseen data: matching — a retrained model treats the
      forget samples as unseen data, so they should end up as confident as the unseen data are,
      no more (``confidence_matching.py``; ``match_on``).
    * Class scope: NPO — a retrained model has never seen the class, its losses there are far above
      those of the class's unseen samples under the original model, so there is no distribution to
      match; NPO's push fades as a sample's loss leaves the original's.
    * Causal LM: NPO, the standard there. A deletion from an LM is usually a whole source (a user's
      documents, a chain of the Markov task) whose content the held-out data do not share: matched
      to held-out losses, the forgotten chain kept 0.37× the retrained model's KL (NPO: 0.7–0.9×).
    * No unseen data: NPO (nothing to match).
    """
    if params.objective != "auto":
        if params.objective == "match" and unseen is None:
            raise ParamsError('objective="match" needs an eval set (the unseen losses it matches)')
        return params.objective
    if params.scope == "samples" and task == "classification" and unseen is not None:
        return "match"
    return "npo"


def _sizes(params: AscentParams, objective: ObjectiveName, task: Task, anchored: bool) -> dict[str, Any]:
    """batch_size, anchor_weight, lr, anchor_mixup, anchor_batch_size, anchor_copies and epochs: the
    objective's defaults where the params leave them None (epochs: ``NO_ANCHOR_EPOCHS`` without an
    anchor)."""
    defaults = OBJECTIVE_DEFAULTS[(objective, task)]
    mixup, copies, abs_ = params.anchor_mixup, params.anchor_copies, params.anchor_batch_size
    epochs = params.epochs
    if epochs is None:
        epochs = int(defaults["epochs"]) if anchored else NO_ANCHOR_EPOCHS
    return {
        "anchor_mixup": bool(mixup if mixup is not None else defaults["anchor_mixup"]),
        "anchor_copies": int(copies if copies is not None else defaults["anchor_copies"]),
        "anchor_batch_size": int(abs_ if abs_ is not None else defaults["anchor_batch_size"]),
        "epochs": int(epochs),
        "match_on": _match_on(params, task, objective),
        "lr": float(params.lr if params.lr is not None else defaults["lr"]),
        "batch_size": int(params.batch_size if params.batch_size is not None else defaults["batch_size"]),
        "anchor_weight": float(
            params.anchor_weight if params.anchor_weight is not None else defaults["anchor_weight"]
        ),
    }


def _match_on(params: AscentParams, task: Task, objective: ObjectiveName) -> MatchSpace:
    """``"auto"``: the label's confidence on a classifier, the loss on a causal LM (a sequence has
    no single label to be confident in)."""
    if objective == "match" and params.match_on == "confidence" and task != "classification":
        raise ParamsError('match_on="confidence" needs a classification task (labels)')
    if params.match_on != "auto":
        return params.match_on
    return "confidence" if task == "classification" else "loss"


def _anchor(params: AscentParams, utility: Dataset | None) -> Dataset | None:
    if params.anchor == "none" or params.anchor_weight == 0:
        return None
    if utility is None:
        if params.anchor == "kl":
            raise ParamsError(
                'anchor="kl" needs an eval set (of the classes not forgotten, with scope="class")'
            )
        return None
    return utility


def plan_checks(params: AscentParams, forget: Dataset, eval: Dataset | None, seed: int = 0) -> CheckPlan:
    """The plan of the checks; raises ParamsError for a combination that cannot run.

    The KL anchor, the stop, the guard and loss matching's targets all use the eval set the method
    gets (the anchor half of the caller's). Halving it again, so that the targets and the stop come
    from samples the KL term does not fit, was measured and lost more to the smaller anchor than it
    gained (MNIST-1D, 10% random: Avg Gap 9.3 against 7.2 points): ``seed`` is kept for such splits.
    """
    task = infer_task(forget)
    if params.scope == "samples":
        objective = resolve_objective(params, task, eval)
        mode = _early_stop_mode(params, eval, objective, task)
        anchor = _anchor(params, eval)
        sizes = _sizes(params, objective, task, anchor is not None)
        return CheckPlan(mode, None, eval, eval, objective, anchor, **sizes)
    classes, utility, unseen = split_by_class(forget, eval)
    objective = resolve_objective(params, task, unseen)
    mode = _early_stop_mode(params, eval, objective, task)
    if mode == "eval_accuracy" and utility is None:
        raise ParamsError(
            'early_stop="eval_accuracy" with scope="class" needs eval samples of classes not forgotten'
        )
    if mode == "mia" and unseen is None:
        raise ParamsError('early_stop="mia" with scope="class" needs eval samples of the forgotten classes')
    anchor = _anchor(params, utility)
    sizes = _sizes(params, objective, task, anchor is not None)
    return CheckPlan(mode, classes, utility, unseen, objective, anchor, **sizes)
