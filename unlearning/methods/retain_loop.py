"""The loop the retain-based approximate methods (``finetune``, ``neggrad_plus``, ``scrub``) share.

Each runs epochs over the retain set (shuffled with the run's seed) and steps one optimizer on a loss
of its own; what they share is when forgetting is done, checked a few times per epoch:

* scope ``"samples"`` (a random subset of the training data was erased): a model retrained without
  the samples treats them as unseen data, so forgetting is done once the forget accuracy is down to
  the accuracy of the model *before* unlearning on the eval (holdout) samples the method is given —
  what a retrained model scores on unseen data. The current eval accuracy would be the wrong
  target: it falls as the forget term damages the model, and the method would then over-forget.
  Without an eval set there is no target: the forget term stays on for every epoch;
* scope ``"class"`` (whole classes were erased): a retrained model never predicts a class it never
  saw, so the target is forget accuracy ≤ ``class_forget_accuracy`` (default 0);
* scope ``"auto"`` (default): ``"class"`` when no retain sample carries a label of the forget set —
  then the retain set proves the classes are gone —, else ``"samples"``.

The forget term of a method is on while the last check is above the target and off once it is
reached; it comes back on if a later check rises above the target again (the retain-only steps in
between repair the model and may bring some forgotten samples back). Once the target is first
reached after s steps, the run goes on for ``repair_fraction`` · s more steps: the damage the
forget term did grows with the steps it took, and so does the repair it needs — a fixed number of
repair epochs would be too few after a long ascent and, where the target falls within the first
epoch (whole classes), would cost more than the forgetting did. The run also ends after ``epochs``.
A target already reached before any step ends the run at once: the model is returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import Field

from unlearning.batching import iterate_batches
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.params import MethodParams
from unlearning.methods.safety import check_finite_loss
from unlearning.samples import infer_task, num_samples
from unlearning.training import make_optimizer
from unlearning.types import Dataset
from unlearning.verification import per_sample_metrics

Scope = Literal["samples", "class"]

# The retain-aware method to run when the caller names none, chosen by measurement
# (benchmarks/retain_selection.py, results/retain_selection.json): NegGrad+ had the lowest mean Avg
# Gap to retraining over both settings among the candidates at least 10× faster than retraining.
DEFAULT_RETAIN_METHOD = "neggrad_plus"


class RetainLoopParams(MethodParams):
    """Params every retain-based method has.

    The defaults are measured (``benchmarks/retain_selection.py``, tuned on seed 0 of an MLP that
    memorises MNIST-1D with 10% random forgetting and of a digits MLP with a class forgotten); each
    method overrides those that differ.
    """

    epochs: int = Field(20, ge=1, le=10_000)  # at most; the run usually ends earlier (see repair_fraction)
    repair_fraction: float = Field(0.25, ge=0, le=100)
    lr: float = Field(3e-3, gt=0, le=10)
    batch_size: int = Field(128, ge=1, le=1_000_000)  # of the retain set
    # Adam: on memorised samples the loss gradients all but vanish; Adam's normalised steps do not.
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0, le=1)
    scope: Literal["auto", "samples", "class"] = "auto"
    early_stop: bool = True
    checks_per_epoch: int = Field(4, ge=1, le=1000)
    class_forget_accuracy: float = Field(0.0, ge=0, le=1)


def resolve_scope(params: RetainLoopParams, forget: Dataset, retain: Dataset) -> Scope:
    """The scope "auto" stands for: "class" when the retain set holds none of the forget set's labels."""
    if params.scope != "auto":
        return params.scope
    if infer_task(forget) != "classification" or "labels" not in retain:
        return "samples"
    kept = torch.isin(retain["labels"], torch.unique(forget["labels"]).to(retain["labels"].device))
    return "samples" if bool(kept.any()) else "class"


def cycle_batches(
    data: Dataset, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches, reshuffled at every pass (the forget set beside the retain set)."""
    while True:
        yield from iterate_batches(data, batch_size, shuffle=True, generator=generator, device=device)


def _accuracy(ctx: RunContext[Any], data: Dataset) -> float:
    _, correct = per_sample_metrics(ctx.model, data, task=ctx.task, device=ctx.device)
    return float(correct.double().mean())


class RetainLoop:
    """Epochs over the retain set, the optimizer, the checks and the stopping rule of one run."""

    def __init__(self, ctx: RunContext[RetainLoopParams], *, extra_steps: int = 0) -> None:
        assert ctx.retain is not None  # the top-level unlearn enforces requires_retain
        self.ctx, self.params, self.retain = ctx, ctx.params, ctx.retain
        self.scope = resolve_scope(self.params, ctx.forget, self.retain)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        trainable = [p for p in ctx.model.parameters() if p.requires_grad]
        p = self.params
        self.optimizer = make_optimizer(
            p.optimizer, trainable, p.lr, momentum=p.momentum, weight_decay=p.weight_decay
        )
        self.retain_steps = -(-num_samples(self.retain) // p.batch_size)
        k = min(p.checks_per_epoch, self.retain_steps)
        # 1-based retain steps of an epoch after which a check runs (the last one always does).
        self.check_after = {round(self.retain_steps * (i + 1) / k) for i in range(k)}
        self.planned = p.epochs * self.retain_steps + extra_steps  # for progress: at most this many
        self.steps = 0
        self.checks: list[dict[str, float]] = []
        self.target: float | None = None
        if p.early_stop and self.scope == "class":
            self.target = p.class_forget_accuracy
        elif p.early_stop and ctx.eval is not None:
            self.target = _accuracy(ctx, ctx.eval)  # the model's accuracy on unseen data, before any step
        self.reached_at: int | None = None  # the steps taken when the target was first reached
        self.epochs_run = 0
        self.forgetting = not self._check()  # reached before any step: done, the model stays as it is

    @property
    def checked(self) -> bool:
        return self.target is not None

    @property
    def done(self) -> bool:
        """The repair steps after the target was first reached are over."""
        if self.reached_at is None:
            return False
        return self.steps >= self.reached_at + math.ceil(self.params.repair_fraction * self.reached_at)

    def _check(self) -> bool:
        """Measure the forget accuracy; True when it is at or below the target."""
        if self.target is None:
            return False
        acc = _accuracy(self.ctx, self.ctx.forget)
        self.checks.append({"step": self.steps, "forget_accuracy": acc})
        reached = acc <= self.target
        if reached and self.reached_at is None:
            self.reached_at = self.steps
        return reached

    def epochs(self) -> Iterator[int]:
        """Epoch indices until ``epochs`` or the end of the repair."""
        for epoch in range(self.params.epochs):
            if self.done:
                return
            self.ctx.model.train()
            self.epochs_run = epoch + 1
            yield epoch

    def retain_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """One shuffled pass over the retain set, cut short when the repair ends; checks between steps."""
        batches = iterate_batches(
            self.retain,
            self.params.batch_size,
            shuffle=True,
            generator=self.generator,
            device=self.ctx.device,
        )
        for i, batch in enumerate(batches, start=1):
            if self.done:
                return
            yield batch
            if i in self.check_after and self.checked:
                self.forgetting = not self._check()
                self.ctx.model.train()  # the check's forward passes ran in eval mode

    def step(self, loss: torch.Tensor, where: str) -> None:
        """One optimizer step on ``loss``; DivergedError on NaN/Inf, progress and cancellation after."""
        self.ctx.check_cancel()
        check_finite_loss(loss, where)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        self.ctx.progress("unlearn", self.steps / max(self.planned, 1))

    def outcome(self, **report: Any) -> MethodOutcome:
        """The model in eval mode and what every retain-based method reports."""
        self.ctx.model.eval()
        return MethodOutcome(
            self.ctx.model,
            {
                "scope": self.scope,
                "n_retain": num_samples(self.retain),
                "epochs_run": self.epochs_run,
                "steps": self.steps,
                "forget_accuracy_target": self.target,
                "target_reached_at_step": self.reached_at,
                "stop_reason": "target_reached" if self.reached_at is not None else "epochs",
                "checks": self.checks,
                **report,
            },
        )
