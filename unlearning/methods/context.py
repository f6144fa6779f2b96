"""What a method runs with (:class:`RunContext`, built once by ``unlearn()``) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from unlearning.methods.params import MethodParams
from unlearning.methods.safety import check_cancel
from unlearning.types import CancelFn, Dataset, ProgressFn, Task

# Covariant: a run of IMUParams is a run of AscentParams (the context is frozen, params read-only).
P = TypeVar("P", bound=MethodParams, covariant=True)


@dataclass(frozen=True)
class RunContext(Generic[P]):
    """One method run: the model to change, its data, its resolved params and the run's settings."""

    model: nn.Module  # a private copy, already on ``device``: the method changes it in place
    forget: Dataset
    params: P
    task: Task  # of the forget set
    device: torch.device
    seed: int
    progress: ProgressFn  # progress(stage, fraction of the method's own work)
    should_cancel: CancelFn | None = None
    eval: Dataset | None = None
    retain: Dataset | None = None  # never None for a method registered with requires_retain

    def check_cancel(self) -> None:
        """CancelledError once ``should_cancel()`` is true; methods call it between steps."""
        check_cancel(self.should_cancel)

    def sub_progress(self, start: float) -> RunContext[P]:
        """The same run with its progress mapped to [start, 1] (the part left after a first stage)."""
        outer = self.progress
        return replace(self, progress=lambda stage, f: outer(stage, start + (1 - start) * f))


@dataclass
class MethodOutcome:
    """What a method returns: the changed model and its own report entries (epochs_run, ...)."""

    model: nn.Module
    report: dict[str, Any] = field(default_factory=dict)
