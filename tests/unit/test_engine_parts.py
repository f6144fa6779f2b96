"""The engine's parts on their own: the typed report, the run context, the ascent loop's pluggable
objective and step schedule, and the one set of data-set rules."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import torch
from torch import nn

from unlearning import UnlearnReport
from unlearning.errors import DataError
from unlearning.methods import RunContext, unlearn
from unlearning.methods.ascent import AscentParams, Objective, WeightedAscent, ascend
from unlearning.methods.ascent.schedule import AdaptiveSchedule
from unlearning.samples import infer_task, num_samples, take
from unlearning.types import Task

CORE_KEYS = [
    "method",
    "params",
    "device",
    "seed",
    "before",
    "after",
    "elapsed_s",
    "method_s",
    "param_l2_change",
]


def _toy(n: int = 40, classes: int = 3) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, classes))
    x = torch.randn(2 * n, 5)
    y = torch.arange(2 * n) % classes
    return model, {"inputs": x[:n], "labels": y[:n]}, {"inputs": x[n:], "labels": y[n:]}


# --- the typed report --------------------------------------------------------------------------


def test_report_is_typed_and_to_dict_is_the_json_dict() -> None:
    model, forget, ev = _toy()
    rep = unlearn("ga", model, forget, {"preset": "adaptive"}, eval=ev, device="cpu").report
    assert isinstance(rep, UnlearnReport)
    d = rep.to_dict()
    assert list(d)[: len(CORE_KEYS)] == CORE_KEYS  # the method's own entries follow, in its order
    n = len(CORE_KEYS) + len(rep.details)
    assert list(d)[len(CORE_KEYS) : n] == list(rep.details)
    tail = ["eval_split", "mia_two_sided"]
    assert list(d)[n:] == ([*tail, "flags"] if rep.flags else tail)
    assert "other_classes_eval" not in d
    json.dumps(d)  # JSON-able as it stands
    # The dict view: item access, get, membership, dict() — as callers of the old dict use it.
    assert rep["before"] == rep.before and rep["steps"] == rep.steps == d["steps"]
    assert rep.get("stop_reason") == rep.stop_reason and "n_selected" in rep and "nope" not in rep
    assert dict(rep) == d and isinstance(rep, Mapping)
    with pytest.raises(KeyError):
        rep["nope"]


def test_class_scope_report_ends_with_other_classes_eval() -> None:
    model, forget, ev = _toy()
    one_class = take(forget, forget["labels"] == 0)
    rep = unlearn(
        "ga", model, one_class, {"preset": "adaptive", "scope": "class"}, eval=ev, device="cpu"
    ).report
    assert rep.other_classes_eval is not None
    d = rep.to_dict()
    keys = list(d)
    tail = ["eval_split", "mia_two_sided"]
    assert keys[keys.index("other_classes_eval") + 1 :] in (tail, [*tail, "flags"])
    assert set(d["other_classes_eval"]) == {"before", "after"}


# --- the run context and a pluggable objective -------------------------------------------------


class CountingAscent(WeightedAscent):
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        self.calls += 1
        return super().__call__(net, batch, weights, task)


class Descent(Objective):
    """The opposite objective: minimise the weighted forget loss (fits the forget set instead)."""

    def __call__(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], weights: torch.Tensor, task: Task
    ) -> torch.Tensor:
        return -WeightedAscent()(net, batch, weights, task)


def _ctx(model: nn.Module, forget: dict[str, torch.Tensor], params: AscentParams) -> RunContext[AscentParams]:
    return RunContext(
        model=model,
        forget=forget,
        params=params,
        task=infer_task(forget),
        device=torch.device("cpu"),
        seed=0,
        progress=lambda _stage, _f: None,
    )


def test_objective_is_pluggable() -> None:
    model, forget, _ = _toy()
    n = num_samples(forget)
    params = AscentParams(
        preset="official", epochs=3, batch_size=16, alpha=0.0, momentum=0.0, weight_decay=0.0
    )

    def uniform() -> tuple[torch.Tensor, dict[str, int]]:
        return torch.ones(n), {"n_selected": n}

    counting = CountingAscent()
    out = ascend(_ctx(model, forget, params), uniform, objective=counting)
    assert counting.calls == out.report["steps"] == 3 * 3  # 40 samples in batches of 16, 3 epochs

    @torch.no_grad()
    def loss(m: nn.Module) -> float:
        return float(nn.functional.cross_entropy(m(forget["inputs"]), forget["labels"]))

    up, down = _toy()[0], _toy()[0]
    start = loss(up)
    ascend(_ctx(up, forget, params), uniform)
    ascend(_ctx(down, forget, params), uniform, objective=Descent())
    assert loss(up) > start > loss(down)


# --- the adaptive step schedule ----------------------------------------------------------------


def test_adaptive_schedule_grows_then_bisects_to_the_guard_boundary() -> None:
    s = AdaptiveSchedule(AscentParams(lr=1.0, max_lr=4.0, min_lr=0.5, step_schedule="adaptive"))
    assert not s.after_accept(first=True) and s.lr == 1.0  # the check before any step decides nothing
    assert not s.after_accept(first=False) and s.lr == 2.0
    assert not s.after_accept(first=False) and s.lr == 4.0
    assert not s.after_accept(first=False) and s.lr == 4.0  # capped at max_lr
    assert s.backtracks(tripped=True, reached=False)
    assert not s.after_backtrack(tripped=True, rejected=None) and s.lr == 2.0
    assert not s.after_accept(first=False) and s.lr == 1.0  # bisecting: accepted checks shrink too
    assert not s.after_accept(first=False) and s.lr == 0.5
    assert s.after_accept(first=False)  # the next step would fall below min_lr: stop


def test_adaptive_schedule_overshoot_refines_down_to_lr_only() -> None:
    s = AdaptiveSchedule(AscentParams(lr=1.0, max_lr=8.0, step_schedule="adaptive"))
    s.after_accept(first=True)
    s.after_accept(first=False)
    s.after_accept(first=False)
    assert s.lr == 4.0 and s.backtracks(tripped=False, reached=True)  # the target, coarser than lr
    assert not s.after_backtrack(tripped=False, rejected=None) and s.lr == 2.0
    assert not s.after_accept(first=False) and s.lr == 1.0
    assert not s.after_accept(first=False) and s.lr == 1.0  # without a guard trip, never below lr
    assert not s.backtracks(tripped=False, reached=True)  # reached with a step of lr: accepted


# --- one set of data-set rules -----------------------------------------------------------------


def test_data_set_rules() -> None:
    ids = torch.zeros(3, 4, dtype=torch.long)
    assert infer_task({"input_ids": ids}) == "causal-lm"
    assert infer_task({"input_ids": ids, "labels": ids}) == "causal-lm"  # an LM with its own targets
    assert infer_task({"inputs": torch.zeros(3, 2), "labels": torch.zeros(3)}) == "classification"
    with pytest.raises(DataError, match="cannot tell the task"):
        infer_task({"labels": torch.zeros(3)})
    data = {"inputs": torch.arange(6).view(3, 2), "labels": torch.tensor([0, 1, 2])}
    for index in (torch.tensor([2, 0]), [2, 0]):
        assert take(data, index)["labels"].tolist() == [2, 0]
    assert take(data, torch.tensor([True, False, True]))["labels"].tolist() == [0, 2]
    assert take(data, slice(1, 3))["labels"].tolist() == [1, 2]
    with pytest.raises(DataError, match="different numbers of samples"):
        num_samples({"inputs": torch.zeros(3, 2), "labels": torch.zeros(2)})
