"""The report of one ``unlearn()`` run, typed, with its JSON form (:meth:`UnlearnReport.to_dict`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# {forget_accuracy, forget_loss, eval_accuracy?, eval_loss?, mia_auc?} (``verification.measure``), or
# {accuracy, loss} (``verification.evaluate``).
Metrics = dict[str, float]


@dataclass(frozen=True)
class BeforeAfter:
    """Metrics of the same data before and after the method."""

    before: Metrics
    after: Metrics

    def to_dict(self) -> dict[str, Metrics]:
        return {"before": self.before, "after": self.after}


@dataclass(frozen=True)
class UnlearnReport(Mapping[str, Any]):
    """What ``unlearn()`` measured and what the method reported.

    ``details`` holds the method's own entries (epochs_run, steps, stop_reason, n_selected, recipe...),
    which differ from method to method. The report reads like the dict it used to be
    (``report["before"]``, ``report.get("steps")``, ``dict(report)``) through :meth:`to_dict`, so that
    callers written against the dict keep working while they move to the typed fields.
    """

    method: str
    params: dict[str, Any]  # resolved, with defaults, as JSON
    device: str
    seed: int
    before: Metrics  # forget (and eval) metrics of the input model
    after: Metrics  # the same metrics of the new model
    elapsed_s: float  # the whole call: copy, verification and method
    # The method alone, without the copy and the before/after verification around it: the figure to
    # set beside the time of retraining.
    method_s: float
    param_l2_change: float
    details: dict[str, Any] = field(default_factory=dict)
    # scope="class": accuracy and loss on the eval samples of the classes not forgotten.
    other_classes_eval: BeforeAfter | None = None
    # The positions of the eval set the method saw (anchor) and the metrics use (check); None
    # without an eval set (``holdout.HoldoutSplit.to_dict``).
    eval_split: dict[str, Any] | None = None
    # The population loss attack read two-sided (``verification.mia_reading``): its AUC, the data
    # it compares the forget set with, both sizes and the margin those sizes give; None without
    # unseen data to compare with.
    mia_two_sided: dict[str, Any] | None = None
    # Warnings on the result, e.g. "mia_over_forgetting" (``verification.mia_flags``).
    flags: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int | None:
        steps = self.details.get("steps")
        return int(steps) if steps is not None else None

    @property
    def stop_reason(self) -> str | None:
        reason = self.details.get("stop_reason")
        return str(reason) if reason is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict: the fields above in this order, the method's entries, then
        ``other_classes_eval`` = {"before", "after"}, ``eval_split``, ``mia_two_sided`` and ``flags`` when
        present."""
        out: dict[str, Any] = {
            "method": self.method,
            "params": self.params,
            "device": self.device,
            "seed": self.seed,
            "before": self.before,
            "after": self.after,
            "elapsed_s": self.elapsed_s,
            "method_s": self.method_s,
            "param_l2_change": self.param_l2_change,
            **self.details,
        }
        if self.other_classes_eval is not None:
            out["other_classes_eval"] = self.other_classes_eval.to_dict()
        if self.eval_split is not None:
            out["eval_split"] = self.eval_split
        if self.mia_two_sided is not None:
            out["mia_two_sided"] = self.mia_two_sided
        if self.flags:
            out["flags"] = list(self.flags)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
