"""``unlearn()``: one method run on a private copy of a model, measured before and after.

The eval set is split in two (``holdout.py``): the method gets the anchor half as ``ctx.eval`` (its
anchor and early stop), and the before/after metrics — what an acceptance check reads — are taken on
the check half, which the method never sees. ``report.eval_split`` says which positions are which.
With ``eval_split=False`` the method and the metrics share the whole set (the old behaviour).

With ``scope="class"`` (imu, ga) the eval accuracy of the whole eval set is expected to fall (the
forgotten classes' eval samples should no longer be recognised), so the report adds
``other_classes_eval`` = {"before", "after"} accuracy and loss on the eval samples of the other
classes: the utility an acceptance policy should compare.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearning.batching import resolve_device
from unlearning.errors import DivergedError, ParamsError
from unlearning.holdout import HoldoutSplit, split_holdout
from unlearning.methods.ascent.plan import split_by_class
from unlearning.methods.context import RunContext
from unlearning.methods.params import MethodParams
from unlearning.methods.registry import get_method
from unlearning.methods.safety import all_finite, check_cancel
from unlearning.report import BeforeAfter, UnlearnReport
from unlearning.samples import infer_task, num_samples
from unlearning.types import CancelFn, Dataset, ProgressFn, UnlearnResult
from unlearning.verification import (
    evaluate,
    measure,
    mia_auc,
    mia_reading,
    param_l2_change,
    per_sample_losses,
)


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed every RNG and ask for deterministic kernels; the previous global settings come back after."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    prev_alg = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
            torch.backends.cudnn.benchmark = prev_bench


class _Progress:
    """Maps a method's own fractions into [0.05, 0.95] and never lets the overall fraction go back."""

    def __init__(self, fn: ProgressFn | None, should_cancel: CancelFn | None) -> None:
        self.fn, self.should_cancel, self.last = fn, should_cancel, 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        check_cancel(self.should_cancel)
        self.last = max(self.last, min(max(float(fraction), 0.0), 1.0))
        if self.fn is not None:
            self.fn(stage, self.last)

    def inner(self, stage: str, fraction: float) -> None:
        self(stage, 0.05 + 0.9 * min(max(float(fraction), 0.0), 1.0))


def unlearn(
    method: str,
    model: nn.Module,
    forget: Dataset,
    params: dict[str, Any] | MethodParams | None = None,
    *,
    eval: Dataset | None = None,
    retain: Dataset | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    eval_split: bool = True,
) -> UnlearnResult:
    """Run ``method`` on a private copy of ``model``; the input model is never modified.

    Returns the new model on CPU and an :class:`~unlearning.report.UnlearnReport`: method, params
    (resolved, with defaults), device, seed, before/after metrics M, elapsed_s (all of it), method_s
    (the method alone), param_l2_change and the method's own entries. With an eval set (and
    ``eval_split``) the method sees its anchor half only and the eval metrics are the check half's
    (``report.eval_split``); ``report.flags`` names warnings such as ``"mia_over_forgetting"``.
    Raises ParamsError (bad method/params, missing retain set), DivergedError (NaN/Inf),
    CancelledError (``should_cancel()`` became true).
    """
    spec = get_method(method)
    resolved = spec.parse_params(params)
    if num_samples(forget) == 0:
        raise ParamsError("the forget set is empty")
    if spec.requires_retain and (retain is None or num_samples(retain) == 0):
        raise ParamsError(f"method {method!r} needs the retain set (retain=...)")
    task = infer_task(forget)
    dev = resolve_device(device)
    split: HoldoutSplit | None = None
    method_eval, check_eval = eval, eval
    if eval is not None and eval_split:
        split = split_holdout(eval, seed)
        if split is not None:
            method_eval, check_eval = split.parts(eval)
    others = gone = None
    class_scope = getattr(resolved, "scope", "samples") == "class"
    if class_scope:
        # Also rejects a forget set without classes, before any work.
        _, others, gone = split_by_class(forget, check_eval)
    prog = _Progress(progress, should_cancel)
    start = time.perf_counter()
    with deterministic(seed):
        prog("prepare", 0.0)
        work = copy.deepcopy(model).to(dev)
        before = measure(work, forget, check_eval, task=task, device=dev)
        before_others = evaluate(work, others, task=task, device=dev) if others is not None else None
        prog("measure", 0.05)
        ctx = RunContext(
            model=work,
            forget=forget,
            params=resolved,
            task=task,
            device=dev,
            seed=seed,
            progress=prog.inner,
            should_cancel=should_cancel,
            eval=method_eval,
            retain=retain,
        )
        method_start = time.perf_counter()
        outcome = spec.fn(ctx)
        new = outcome.model
        method_s = time.perf_counter() - method_start
        if not all_finite(new):
            raise DivergedError(f"{method} produced NaN/Inf parameters; the input model is unchanged")
        prog("verify", 0.95)
        after = measure(new, forget, check_eval, task=task, device=dev)
        after_others = evaluate(new, others, task=task, device=dev) if others is not None else None
        # Forget vs unseen data of the same kind: in the class scope that is the forgotten classes'
        # eval samples (the other classes' would make any forgetting look like over-forgetting).
        reading: dict[str, Any] | None = None
        if class_scope and gone is not None and num_samples(gone) > 0:
            fl = per_sample_losses(new, forget, task=task, device=dev)
            gl = per_sample_losses(new, gone, task=task, device=dev)
            reading = mia_reading(mia_auc(fl, gl), fl.numel(), gl.numel(), "forgotten_classes_eval")
        elif not class_scope and check_eval is not None and "mia_auc" in after:
            against = "eval_check_half" if split is not None else "eval"
            reading = mia_reading(after["mia_auc"], num_samples(forget), num_samples(check_eval), against)
        flags = (
            []
            if reading is None or reading["reading"] == "indistinguishable"
            else [f"mia_{reading['reading']}"]
        )
    new = new.cpu().eval()
    report = UnlearnReport(
        method=method,
        params=resolved.model_dump(mode="json"),
        device=str(dev),
        seed=seed,
        before=before,
        after=after,
        elapsed_s=time.perf_counter() - start,
        method_s=method_s,
        param_l2_change=param_l2_change(model, new),
        details=outcome.report,
        other_classes_eval=(
            BeforeAfter(before_others, after_others)
            if before_others is not None and after_others is not None
            else None
        ),
        eval_split=split.to_dict() if split is not None else None,
        mia_two_sided=reading,
        flags=flags,
    )
    prog("done", 1.0)
    return UnlearnResult(new, report)
