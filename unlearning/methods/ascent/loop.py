"""The weighted gradient-ascent loop on θ over the forget samples with weight > 0.

One :class:`AscentLoop` is one run; its attributes are the loop's state (step and check counters, θ
at the last accepted check, why it stopped), its methods the parts of a run: :meth:`step` (one
optimiser step), :meth:`check` (evaluate θ, accept it or send it back, decide whether to stop) and
:meth:`run` (epochs of steps between checks). What a step minimises is the :class:`Objective`; how
the rate evolves is the :class:`StepSchedule`; what the checks compare is the :class:`CheckPlan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from unlearning.batching import iterate_batches
from unlearning.losses import logits
from unlearning.methods.ascent.checks import Check, Checker, UtilityGuard
from unlearning.methods.ascent.compose import build_objective
from unlearning.methods.ascent.features import cache_features
from unlearning.methods.ascent.objective import Objective, ObjectiveData
from unlearning.methods.ascent.params import AscentParams
from unlearning.methods.ascent.plan import CheckPlan
from unlearning.methods.ascent.schedule import AdaptiveSchedule, ConstantSchedule, StepSchedule
from unlearning.methods.context import RunContext
from unlearning.methods.safety import check_finite_loss
from unlearning.samples import num_samples, take
from unlearning.targets import ClosedFormNotApplicable, focus_on, resolve_target
from unlearning.types import Dataset
from unlearning.verification import mia_auc, mia_flags

# The per-sample weights ride along in the batches of the selected samples under this key.
WEIGHT_KEY = "__weight__"


class AscentLoop:
    """Weighted gradient ascent on θ (``params.target``) of ``ctx.model``, in place.

    ``weights`` [N] weigh the forget samples (zero: not selected); ``reweight``, when given, computes
    them again on the current model at the start of every epoch after the first.
    """

    def __init__(
        self,
        ctx: RunContext[AscentParams],
        plan: CheckPlan,
        weights: torch.Tensor,
        *,
        reweight: Callable[[], torch.Tensor] | None = None,
        objective: Objective | None = None,
    ) -> None:
        self.ctx, self.params, self.plan = ctx, ctx.params, plan
        self.weights, self.reweight = weights, reweight
        self.objective = objective if objective is not None else self._objective_of_params()
        self.names = resolve_target(ctx.model, self.params.target)
        # The report's counters and outcome.
        self.epochs_run = 0
        self.steps = 0
        self.since_safe = 0  # steps since the last accepted check
        self.backtracks = 0  # θ sent back to the last accepted check
        self.stopped = False
        self.stop_reason: str | None = None
        self.rejected: Check | None = None  # the check the guard rejected when the loop stopped
        self.last: Check | None = None  # the last accepted check
        self.note: str | None = None
        self.features_cached = False
        self.feature_cache_skipped: str | None = None

    # -- set-up -----------------------------------------------------------------------------------

    def _objective_of_params(self) -> Objective:
        p = self.params
        return build_objective(
            self.plan.objective,
            npo_beta=p.npo_beta,
            anchor=self.plan.anchor is not None,
            anchor_weight=self.plan.anchor_weight,
            anchor_batch_size=self.plan.anchor_batch_size,
            anchor_mixup=self.plan.anchor_mixup,
            anchor_copies=self.plan.anchor_copies,
            match_on=self.plan.match_on,
        )

    def _prepare(self, theta: list[torch.nn.Parameter]) -> None:
        """The model and data sets the steps and checks run on, the optimiser and the schedule."""
        ctx, params, plan, dev = self.ctx, self.params, self.plan, self.ctx.device
        self.theta = theta
        # Features instead of inputs, and the head instead of the model, when θ is a final head.
        self.net: torch.nn.Module = ctx.model
        self.f_set: Dataset = ctx.forget
        u_set, x_set, a_set = plan.utility, plan.unseen, plan.anchor
        if params.bn_mode == "train":
            # Train-mode BatchNorm normalises with each batch's statistics: the head's input is no
            # longer a function of the sample alone, so it cannot be cached.
            self.feature_cache_skipped = 'bn_mode="train"'
        elif params.cache_features:
            try:
                # The plan's sets are often one and the same object: each distinct one is cached once.
                distinct: list[Dataset] = []
                for d in (ctx.forget, plan.utility, plan.unseen, plan.anchor):
                    if d is not None and all(d is not e for e in distinct):
                        distinct.append(d)
                self.net, cached = cache_features(ctx.model, self.names, distinct, dev)

                def as_cached(d: Dataset | None) -> Dataset | None:
                    return None if d is None else cached[next(i for i, e in enumerate(distinct) if e is d)]

                f_cached = as_cached(ctx.forget)
                assert f_cached is not None
                self.f_set = f_cached
                u_set, x_set, a_set = as_cached(plan.utility), as_cached(plan.unseen), as_cached(plan.anchor)
                self.features_cached = True
            except ClosedFormNotApplicable as exc:
                self.feature_cache_skipped = str(exc)
        # The guard needs eval samples to guard. It runs with a stopping rule, and in a fixed-epoch
        # run of an objective that pushes on (ascent, NPO: a causal LM's default runs so), with a
        # check after every epoch; matching without a rule stops pulling at its targets by itself.
        drop = params.max_eval_drop
        guarded = plan.mode is not None or plan.objective != "match"
        self.guard = UtilityGuard(drop) if guarded and u_set is not None and drop is not None else None
        # Checks run for the stopping rule or for the guard.
        self.checking = plan.mode is not None or self.guard is not None
        self.checker = Checker(
            self.net,
            self.f_set,
            u_set,
            x_set,
            mode=plan.mode,
            params=params,
            task=ctx.task,
            device=ctx.device,
            guard_only=plan.mode is None and self.guard is not None,
        )
        n_theta = sum(p.numel() for p in theta)
        self.l1_coef = params.alpha if params.alpha_mode == "sum" else params.alpha / n_theta
        self.opt: torch.optim.Optimizer = (
            torch.optim.Adam(theta, lr=plan.lr, weight_decay=params.weight_decay)
            if params.optimizer == "adam"
            else torch.optim.SGD(
                theta, lr=plan.lr, momentum=params.momentum, weight_decay=params.weight_decay
            )
        )
        # The adaptive schedule decides the rate at every check, so it needs checks (a stopping rule
        # or the guard).
        self.schedule: StepSchedule = (
            AdaptiveSchedule(params, plan.lr)
            if params.step_schedule == "adaptive" and self.checking
            else ConstantSchedule(self.opt, params.milestones, params.gamma)
        )
        self.safe = [p.detach().clone() for p in theta]  # θ at the last accepted check
        self.generator = torch.Generator().manual_seed(ctx.seed)
        # A stopping rule or matching (whose pull ends at its targets) runs within the
        # budget max_epochs; anything else runs its fixed epochs (resolved by the plan).
        self.max_epochs = params.max_epochs if plan.mode or plan.objective == "match" else plan.epochs
        # The objective's own data (reference losses, unseen-loss targets, the original's outputs on
        # the anchor set), taken now, with θ still the original's.
        self.extras = self.objective.prepare(
            ObjectiveData(
                net=self.net,
                forget=self.f_set,
                anchor=a_set,
                unseen=x_set,
                task=ctx.task,
                device=dev,
                generator=torch.Generator().manual_seed(ctx.seed + 1),
            )
        )

    def _selection(self) -> dict[str, torch.Tensor] | None:
        """The forget samples with weight > 0 and their weights; None when there are none."""
        selected = torch.nonzero(self.weights > 0).squeeze(1)
        if selected.numel() == 0:
            return None
        subset = take(self.f_set, selected)
        subset.update(take(self.extras, selected))
        subset[WEIGHT_KEY] = self.weights[selected].float()
        return subset

    # -- one step ---------------------------------------------------------------------------------

    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> None:
        """One optimiser step on a batch of the selected samples (with their weights)."""
        w = batch.pop(WEIGHT_KEY)
        train_mode = self.params.bn_mode == "train"
        if train_mode:
            self.net.train()  # as the official code: batch statistics, running statistics updated
        try:
            loss = self.objective(self.net, batch, w, self.ctx.task)
        finally:
            if train_mode:
                self.net.eval()
        check_finite_loss(loss, f"epoch {epoch}, step {self.steps}")
        # A parameter of θ outside the forward (target "all" on a model with unused parameters) gets
        # no gradient: SGD then skips it (no weight decay either), as after a plain backward().
        grads = torch.autograd.grad(loss, self.theta, allow_unused=True)
        self._set_grads(grads)
        self.schedule.before_step(self.opt)
        self.opt.step()
        if train_mode:
            # The official loop runs a second train-mode forward after each step (for its accuracy
            # log); BatchNorm's running statistics move with it, so it is part of the recipe.
            with torch.no_grad():
                self.net.train()
                try:
                    logits(self.net, batch)
                finally:
                    self.net.eval()
        self.steps += 1
        self.since_safe += 1

    def _set_grads(self, grads: Sequence[torch.Tensor | None]) -> None:
        """θ's ``.grad``: the loss gradient, rescaled with relative steps, plus the L1 term."""
        scale = 1.0
        if self.params.lr_mode == "relative":
            # Every step moves θ by lr·‖θ‖ whatever the gradient scale: on memorised samples CE ≈ 0
            # and the raw gradient vanishes. float64: its square underflows float32.
            g_norm = torch.linalg.vector_norm(
                torch.cat([g.reshape(-1) for g in grads if g is not None]), dtype=torch.float64
            )
            t_norm = torch.linalg.vector_norm(
                torch.cat([p.detach().reshape(-1) for p in self.theta]), dtype=torch.float64
            )
            scale = float(t_norm / g_norm.clamp_min(1e-30))
        # d/dθ of α‖θ‖₁ is α·sign(θ); it is added after the rescaling so α keeps its meaning.
        for p, g in zip(self.theta, grads, strict=True):
            d = None if g is None else g * scale
            if self.l1_coef:
                l1 = self.l1_coef * torch.sign(p.detach())
                d = l1 if d is None else d + l1
            p.grad = d

    # -- checks -----------------------------------------------------------------------------------

    def check(self) -> bool:
        """One check: accept θ or send it back; True when the loop should stop."""
        now = self.checker()
        tripped = self.guard is not None and self.guard.trips(now.metrics)
        reached = not tripped and self.plan.mode is not None and self.checker.reached(now.metrics)
        if self.since_safe > 0 and self.schedule.backtracks(tripped, reached):
            self._back_to_safe()
            if self.schedule.after_backtrack(tripped, now if tripped else None):
                return self._stop("max_eval_drop", self.schedule.rejected)
            return False
        if tripped:
            # Utility guard: back to the last θ within the allowed eval-accuracy drop, and stop; the
            # last accepted check stays that θ's, the rejected one is reported beside it.
            self._back_to_safe()
            return self._stop("max_eval_drop", now)
        self._accept(now)
        if reached:
            return self._stop("target_reached", None)
        if self.schedule.after_accept(first=self.checker.count == 1):
            return self._stop("max_eval_drop", self.schedule.rejected)
        return False

    def _already_unseen(self) -> bool:
        """Matching (no stopping rule) checks once, before any step: forget samples whose losses
        the loss attack cannot tell from the unseen data's (AUC not above 0.5 beyond its noise,
        ``verification.mia_flags``) already look as a retrained model would see them — a random
        10% of sklearn digits does, on a model that generalises — and the run takes no step."""
        if self.plan.objective != "match" or self.plan.unseen is None:
            return False
        now = self.checker()
        if now.losses is None:
            return False
        forget_losses, unseen_losses = now.losses
        auc = mia_auc(forget_losses, unseen_losses)
        self.last = Check({**now.metrics, "mia_auc": auc}, now.losses)
        if "mia_exposed" in mia_flags(auc, forget_losses.numel(), unseen_losses.numel()):
            return False
        self.note = "the forget samples already look unseen (loss-attack AUC within noise of 0.5): no step"
        return self._stop("already_unseen", None)

    def _accept(self, now: Check) -> None:
        for p, q in zip(self.theta, self.safe, strict=True):
            q.copy_(p.detach())
        self.since_safe = 0
        self.last = now

    def _back_to_safe(self) -> None:
        with torch.no_grad():
            for p, q in zip(self.theta, self.safe, strict=True):
                p.copy_(q)
        self.opt.state.clear()  # momentum of the rejected steps must not carry on
        self.backtracks += 1
        self.since_safe = 0

    def _stop(self, reason: str, rejected: Check | None) -> bool:
        self.stop_reason, self.rejected = reason, rejected
        return True

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Epochs of steps with checks (before the first step, after every epoch or every
        ``check_every`` steps) until the stopping rule or the epoch budget ends it; report entries."""
        with focus_on(self.ctx.model, self.names) as theta:
            self._prepare(theta)
            self._epochs()
        return self.report()

    def _epochs(self) -> None:
        ctx, params, checking = self.ctx, self.params, self.checking
        check_every = params.check_every
        stopped = self.check() if checking else self._already_unseen()
        subset: dict[str, torch.Tensor] | None = None
        for epoch in range(self.max_epochs):
            if stopped:
                break
            if epoch > 0 and self.reweight is not None:
                self.weights = self.reweight()
                subset = None
            if subset is None:
                subset = self._selection()
                if subset is None:
                    self.note = "no sample selected: nothing to ascend on"
                    break
            batches = iterate_batches(
                subset, self.plan.batch_size, shuffle=True, generator=self.generator, device=ctx.device
            )
            for batch in batches:
                ctx.check_cancel()
                self.step(batch, epoch)
                if checking and check_every and self.steps % check_every == 0 and self.check():
                    stopped = True
                    break
            self.schedule.end_epoch()
            self.epochs_run = epoch + 1
            if checking and not stopped and not check_every:
                stopped = self.check()
            ctx.progress("unlearn", (epoch + 1) / self.max_epochs)
        self.stopped = stopped

    def report(self) -> dict[str, Any]:
        params, plan, mode = self.params, self.plan, self.plan.mode
        out: dict[str, Any] = {
            "early_stop": mode,
            "scope": params.scope,
            "target_params": self.names,
            "epochs_run": self.epochs_run,
            "steps": self.steps,
        }
        if plan.classes is not None:
            out["forgotten_classes"] = plan.classes
            out["n_eval_excluded"] = num_samples(plan.unseen) if plan.unseen is not None else 0
        if mode == "forget_accuracy":
            out["forget_accuracy_target"] = params.forget_accuracy_target
        out.update(self.objective.describe())
        out["batch_size"] = plan.batch_size
        out["lr"] = plan.lr
        out["optimizer"] = params.optimizer
        out["bn_mode"] = params.bn_mode
        out["features_cached"] = self.features_cached
        if self.feature_cache_skipped is not None:
            out["feature_cache_skipped"] = self.feature_cache_skipped
        out["step_schedule"] = self.schedule.name
        if self.note is not None:
            out["note"] = self.note
        if self.stop_reason is not None:
            out["stop_reason"] = self.stop_reason
        if self.rejected is not None:
            out["rejected_check"] = self.checker.reported(self.rejected)
        out["checks"] = self.checker.count
        out["backtracks"] = self.backtracks
        unseen_already = self.stop_reason == "already_unseen"
        out["stopped_early"] = (self.checking or unseen_already) and self.stopped
        if mode:
            out["target_reached"] = self.stop_reason == "target_reached"
        if self.checking or unseen_already:
            out["last_check"] = self.checker.reported(self.last)
        out["final_lr"] = out["final_step_size"] = self.schedule.final_lr(self.opt)
        return out
