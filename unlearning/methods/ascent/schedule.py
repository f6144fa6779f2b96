"""Step schedules of the ascent: how the step size evolves, decided at the loop's checks.

* :class:`ConstantSchedule` (the default outside the preset): the fixed rate with the ``milestones``
  decay; the loop stops at the first guard trip.
* :class:`AdaptiveSchedule` (``step_schedule="adaptive"``, the preset's choice; needs checks): a
  bold-driver / backtracking rule. While nothing has gone wrong, a check that keeps the guard and has
  not reached the target accepts θ and multiplies the step by ``lr_grow`` (2, at most ``max_lr``).
  A check that trips the guard, or reaches the target with a step larger than ``lr`` (an overshoot),
  sends θ back to the last accepted check, and from then on every check multiplies the step by
  ``lr_shrink`` (0.5): a bisection of the rejected step. So the guard no longer ends the ascent at its
  first trip — the loop goes on towards the guard's boundary and stops with ``"max_eval_drop"`` only
  when the step would fall below ``min_lr`` — and the target is met with a last step of at most
  ``lr``, the precision of the constant schedule, in far fewer steps (on the digits MLP, class
  forgetting: ~10 steps instead of ~27). The loop clears momentum at every backtrack; the
  ``milestones`` decay does not apply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from unlearning.methods.ascent.checks import Check
from unlearning.methods.ascent.params import AscentParams


class StepSchedule(ABC):
    """The loop asks the schedule, at every check, whether to backtrack and whether to stop."""

    name: str
    rejected: Check | None = None  # the last check sent back by the guard, for the report

    # Optional hooks: a schedule that does not act there leaves them empty.
    def before_step(self, opt: torch.optim.Optimizer) -> None:  # noqa: B027
        """Set the rate of the next step."""

    def end_epoch(self) -> None:  # noqa: B027
        """An epoch of steps is over."""

    @abstractmethod
    def final_lr(self, opt: torch.optim.Optimizer) -> float:
        """The rate of the last step (a fraction of ‖θ‖ with relative steps)."""

    def backtracks(self, tripped: bool, reached: bool) -> bool:
        """Whether θ goes back to the last accepted check (and the loop goes on) instead of being
        accepted, or (guard tripped) ending the loop."""
        return False

    def after_backtrack(self, tripped: bool, rejected: Check | None) -> bool:
        """The next rate after a backtrack; True to stop."""
        return False

    def after_accept(self, first: bool) -> bool:
        """The next rate after an accepted check that did not reach the target; True to stop."""
        return False


class ConstantSchedule(StepSchedule):
    name = "constant"

    def __init__(self, opt: torch.optim.Optimizer, milestones: list[int], gamma: float) -> None:
        self.decay = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)

    def end_epoch(self) -> None:
        self.decay.step()

    def final_lr(self, opt: torch.optim.Optimizer) -> float:
        return float(opt.param_groups[0]["lr"])


class AdaptiveSchedule(StepSchedule):
    """Grow while the guard holds, bisect after a trip (or an overshoot of the target)."""

    name = "adaptive"

    def __init__(self, params: AscentParams, lr: float | None = None) -> None:
        # lr: the params' lr as the plan resolved it (None in the params: by objective).
        lr = lr if lr is not None else params.lr
        if lr is None:
            raise ValueError("the step schedule needs the resolved lr")
        self.base_lr = lr
        self.max_lr = max(params.max_lr if params.max_lr is not None else 16 * lr, lr)
        self.min_lr = params.min_lr if params.min_lr is not None else lr / 2
        self.grow, self.shrink = params.lr_grow, params.lr_shrink
        self.lr = lr  # the rate of the next step
        self.refine = False  # after the first backtrack: shrink the rate at every check
        self.tripped = False  # the guard has tripped: the bisection may go below lr, down to min_lr

    def before_step(self, opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group["lr"] = self.lr

    def final_lr(self, opt: torch.optim.Optimizer) -> float:
        return self.lr

    def backtracks(self, tripped: bool, reached: bool) -> bool:
        # Past the guard, or the target met with a step coarser than lr.
        return tripped or (reached and self.lr > self.base_lr)

    def after_backtrack(self, tripped: bool, rejected: Check | None) -> bool:
        self.refine = True
        self.tripped = self.tripped or tripped
        return self._bisect(rejected)

    def after_accept(self, first: bool) -> bool:
        if first:  # the check before any step says nothing about the rate
            return False
        if self.refine:
            return self._bisect(None)
        self.lr = min(self.lr * self.grow, self.max_lr)
        return False

    def _bisect(self, rejected: Check | None) -> bool:
        """The bisection's next rate; True (stop) once the guard's boundary is located within min_lr."""
        if rejected is not None:
            self.rejected = rejected
        if not self.tripped:
            self.lr = max(self.lr * self.shrink, self.base_lr)  # the target alone: precision lr
            return False
        if self.lr * self.shrink >= self.min_lr:
            self.lr = self.lr * self.shrink
            return False
        return True
