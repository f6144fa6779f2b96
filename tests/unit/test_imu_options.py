"""Ascent options of imu/ga: class-scope forgetting and head-feature caching.

These tests look at the loop's own view of the eval set (its checks, its guard), so they hand it the
whole set (``eval_split=False``); the split itself is tested in test_anchored.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearning import build_model
from unlearning.errors import ParamsError
from unlearning.methods import unlearn
from unlearning.methods.ascent import CLASS_FORGET_ACCURACY_TARGET, split_by_class
from unlearning.training import train
from unlearning.verification import evaluate

FORGOTTEN = 0  # IMU reaches 0.0 within the budget here with either step schedule
# On class 3 the constant schedule stops at the guard (forget accuracy 0.024); the adaptive one goes on.
GUARDED = 3


@pytest.fixture(scope="module")
def digits() -> dict[str, object]:
    """sklearn digits and an MLP trained on 1200 samples; forget = every training sample of class 0."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1200], perm[1200:]
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [64], "num_classes": 10}})
    train(model, {"inputs": x[tr], "labels": y[tr]}, epochs=30, lr=1e-2, batch_size=128, device="cpu")
    in_class = y[tr] == FORGOTTEN
    ev = {"inputs": x[te], "labels": y[te]}
    return {
        "model": model,
        "class_forget": {"inputs": x[tr][in_class], "labels": y[tr][in_class]},
        "random_forget": {"inputs": x[tr[:120]], "labels": y[tr[:120]]},
        "guarded_forget": {"inputs": x[tr][y[tr] == GUARDED], "labels": y[tr][y[tr] == GUARDED]},
        "eval": ev,
        "others": {k: v[y[te] != FORGOTTEN] for k, v in ev.items()},
    }


def _close(a: nn.Module, b: nn.Module, atol: float = 1e-5) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol, rtol=1e-4) for k in sa)


# --------------------------------------------------------------------------------------------------
# Class scope


@pytest.mark.parametrize("method", ["imu", "ga"])
def test_class_scope_forgets_the_class_and_keeps_the_others(digits: dict, method: str) -> None:
    m, f, ev, others = digits["model"], digits["class_forget"], digits["eval"], digits["others"]
    res = unlearn(
        method, m, f, {"preset": "adaptive", "scope": "class"}, eval=ev, device="cpu", eval_split=False
    )
    rep = res.report
    assert rep["params"]["forget_accuracy_target"] == CLASS_FORGET_ACCURACY_TARGET == 0.0
    assert rep["early_stop"] == "forget_accuracy" and rep["forgotten_classes"] == [FORGOTTEN]
    assert rep["before"]["forget_accuracy"] > 0.95
    assert (
        rep["target_reached"] and rep["after"]["forget_accuracy"] <= rep["params"]["forget_accuracy_target"]
    )
    before, after = evaluate(m, others)["accuracy"], evaluate(res.model, others)["accuracy"]
    assert after >= before - 0.05
    # The full eval set loses the forgotten class's share: a guard on it (0.05) would have stopped early.
    assert rep["before"]["eval_accuracy"] - rep["after"]["eval_accuracy"] > 0.05
    assert rep["other_classes_eval"]["after"]["accuracy"] == pytest.approx(after)


def test_class_scope_guard_and_checks_exclude_the_forgotten_class(digits: dict) -> None:
    f, ev, others = digits["class_forget"], digits["eval"], digits["others"]
    classes, kept, gone = split_by_class(f, ev)
    assert classes == [FORGOTTEN]
    assert not bool((kept["labels"] == FORGOTTEN).any()) and bool((gone["labels"] == FORGOTTEN).all())
    assert len(kept["labels"]) + len(gone["labels"]) == len(ev["labels"])
    # A tight guard: it must trip on the other classes only; with the full eval set it would trip at
    # once, since forgetting class 0 costs the full eval set ~10 points by design.
    res = unlearn(
        "imu",
        digits["model"],
        f,
        {"preset": "adaptive", "scope": "class", "max_eval_drop": 0.02},
        eval=ev,
        eval_split=False,
    )
    rep = res.report
    assert rep["n_eval_excluded"] == len(gone["labels"])
    assert rep["last_check"]["eval_accuracy"] == pytest.approx(
        evaluate(res.model, others)["accuracy"], abs=1e-6
    )
    assert rep["last_check"]["eval_accuracy"] >= evaluate(digits["model"], others)["accuracy"] - 0.02
    # the MIA AUC of the checks compares with the forgotten class's own (unseen) eval samples
    assert rep["last_check"]["forgotten_classes_eval_accuracy"] == pytest.approx(
        evaluate(res.model, gone)["accuracy"], abs=1e-6
    )
    assert rep["after"]["forget_accuracy"] < rep["before"]["forget_accuracy"]


def test_forget_accuracy_rule_in_samples_scope(digits: dict) -> None:
    m, f, ev = digits["model"], digits["random_forget"], digits["eval"]
    with pytest.raises(ParamsError, match="forget_accuracy_target"):
        unlearn("imu", m, f, {"preset": "adaptive", "early_stop": "forget_accuracy"}, eval=ev)
    params = {"preset": "adaptive", "early_stop": "forget_accuracy", "forget_accuracy_target": 0.8}
    rep = unlearn("ga", m, f, {**params, "max_eval_drop": None}, device="cpu").report  # needs no eval set
    assert rep["target_reached"] and rep["after"]["forget_accuracy"] <= 0.8 < rep["before"]["forget_accuracy"]
    # "auto" keeps the sample-level rule: forget accuracy ≤ eval accuracy
    assert unlearn("ga", m, f, {"preset": "adaptive"}, eval=ev).report["early_stop"] == "eval_accuracy"


def test_class_scope_rejects_what_cannot_run(digits: dict) -> None:
    f = digits["class_forget"]
    with pytest.raises(ParamsError, match="classification"):
        unlearn(
            "imu", digits["model"], {"input_ids": torch.zeros(4, 6, dtype=torch.long)}, {"scope": "class"}
        )
    only_others = digits["others"]  # no eval sample of the forgotten class to compare the MIA with
    with pytest.raises(ParamsError, match="forgotten classes"):
        unlearn("ga", digits["model"], f, {"scope": "class", "early_stop": "mia"}, eval=only_others)
    # eval_accuracy compares with the other classes: an eval set of the forgotten class alone has none
    # (this used to fail with a KeyError at the first check)
    gone = {k: v[digits["eval"]["labels"] == FORGOTTEN] for k, v in digits["eval"].items()}
    with pytest.raises(ParamsError, match="classes not forgotten"):
        unlearn("imu", digits["model"], f, {"scope": "class", "early_stop": "eval_accuracy"}, eval=gone)


# --------------------------------------------------------------------------------------------------
# Step schedule


def _class_run(digits: dict, method: str, forget: dict, **params: object) -> tuple[dict, float, float]:
    """(report, other classes' eval accuracy before, after) of a class-scope run with the preset."""
    others = {k: v[digits["eval"]["labels"] != int(forget["labels"][0])] for k, v in digits["eval"].items()}
    res = unlearn(method, digits["model"], forget, {"preset": "adaptive", "scope": "class", **params},
                  eval=digits["eval"], device="cpu", eval_split=False)  # fmt: skip
    return res.report, evaluate(digits["model"], others)["accuracy"], evaluate(res.model, others)["accuracy"]


def test_schedule_params() -> None:
    from unlearning.methods.imu import IMUParams

    assert IMUParams(preset="official").step_schedule == "constant"
    from unlearning.methods.ascent.params import OBJECTIVE_DEFAULTS

    # the anchored default halves the rate at a guard trip and never grows it above lr: its lr is
    # the objective's (None until resolved) and max_lr sits at or below every objective's lr
    anchored = IMUParams()
    assert (anchored.step_schedule, anchored.lr) == ("adaptive", None)
    assert anchored.max_lr is not None
    assert anchored.max_lr <= min(d["lr"] for d in OBJECTIVE_DEFAULTS.values())
    p = IMUParams(preset="adaptive")
    assert (p.step_schedule, p.lr, p.max_lr, p.min_lr) == ("adaptive", 0.005, 0.08, 0.0025)
    assert IMUParams(preset="adaptive", step_schedule="constant").step_schedule == "constant"
    with pytest.raises(ValueError, match="step_schedule"):
        IMUParams(step_schedule="cosine")


@pytest.mark.parametrize("method", ["imu", "ga"])
def test_adaptive_schedule_reaches_the_class_target_in_fewer_steps(digits: dict, method: str) -> None:
    f = digits["class_forget"]
    const, before, const_after = _class_run(digits, method, f, step_schedule="constant")
    adapt, _, adapt_after = _class_run(digits, method, f)
    assert const["step_schedule"] == "constant" and adapt["step_schedule"] == "adaptive"
    for rep, after in ((const, const_after), (adapt, adapt_after)):
        assert rep["target_reached"] and rep["after"]["forget_accuracy"] == 0.0
        assert after >= before - rep["params"]["max_eval_drop"]  # the guard holds
        assert rep["checks"] >= 1 and rep["backtracks"] >= 0
    # ~10 steps instead of ~28 (constant: 0.5% of ‖θ‖ a step); the last step is no coarser than lr
    assert adapt["steps"] < const["steps"] / 2
    assert adapt["final_step_size"] <= adapt["params"]["lr"] == const["final_step_size"]
    assert adapt["checks"] <= adapt["steps"] + 1


@pytest.mark.parametrize("method", ["imu", "ga"])
def test_adaptive_schedule_backtracks_at_the_guard_and_keeps_it(digits: dict, method: str) -> None:
    f, drop = digits["class_forget"], 0.02
    const, before, _ = _class_run(digits, method, f, max_eval_drop=drop, step_schedule="constant")
    rep, _, after = _class_run(digits, method, f, max_eval_drop=drop)
    assert const["stop_reason"] == rep["stop_reason"] == "max_eval_drop"
    assert const["backtracks"] == 1  # the constant schedule stops at the first trip
    # the adaptive one went back and on with halved steps, down to min_lr
    assert rep["backtracks"] >= 1 and rep["final_step_size"] < rep["params"]["min_lr"] * 2
    assert rep["rejected_check"]["eval_accuracy"] < before - drop
    assert rep["last_check"]["eval_accuracy"] == pytest.approx(after, abs=1e-6)
    assert after >= before - drop
    assert rep["after"]["forget_accuracy"] <= const["after"]["forget_accuracy"]  # at least as much forgetting


def test_adaptive_schedule_goes_on_where_the_constant_one_stops_at_the_guard(digits: dict) -> None:
    f = digits["guarded_forget"]
    const, before, _ = _class_run(digits, "imu", f, step_schedule="constant")
    rep, _, after = _class_run(digits, "imu", f)
    assert const["stop_reason"] == "max_eval_drop" and const["after"]["forget_accuracy"] > 0
    assert rep["after"]["forget_accuracy"] < const["after"]["forget_accuracy"]
    assert after >= before - rep["params"]["max_eval_drop"]
    assert rep["steps"] < const["steps"]


def test_adaptive_schedule_is_deterministic_and_cancellable(digits: dict) -> None:
    from unlearning.errors import CancelledError

    f, ev = digits["guarded_forget"], digits["eval"]
    params = {"preset": "adaptive", "scope": "class", "cache_features": False}
    a, b = (unlearn("imu", digits["model"], f, params, eval=ev, seed=5) for _ in range(2))
    assert a.report["steps"] == b.report["steps"] and a.report["backtracks"] == b.report["backtracks"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # bit-identical
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 8

    with pytest.raises(CancelledError):
        unlearn("imu", digits["model"], f, params, eval=ev, should_cancel=cancel)


def test_adaptive_schedule_without_checks_is_constant(digits: dict) -> None:
    # No eval set in the samples scope: no stopping rule, so no checks to decide the step on.
    rep = unlearn(
        "ga", digits["model"], digits["random_forget"], {"preset": "adaptive", "max_epochs": 3}
    ).report
    assert rep["early_stop"] is None and rep["step_schedule"] == "constant" and rep["checks"] == 0


# --------------------------------------------------------------------------------------------------
# Feature caching


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("imu", {"preset": "adaptive"}),
        ("ga", {"preset": "adaptive", "scope": "class"}),
        # official: momentum, weight decay and the L1 term (eval-mode steps: train mode is not cached)
        ("imu", {"preset": "official", "bn_mode": "eval", "epochs": 3}),
        (
            "ga",
            {"preset": "adaptive", "early_stop": "mia", "mia_target": 0.0, "max_epochs": 6, "check_every": 1},
        ),
    ],
)
def test_cached_features_give_the_full_forward_result(digits: dict, method: str, params: dict) -> None:
    forget = digits["class_forget"] if params.get("scope") == "class" else digits["random_forget"]
    runs = [
        unlearn(method, digits["model"], forget, {**params, "cache_features": c}, eval=digits["eval"], seed=1)
        for c in (True, False)
    ]
    (a, b) = (r.report for r in runs)
    assert a["features_cached"] and not b["features_cached"]
    assert a["steps"] == b["steps"] > 0 and a.get("stop_reason") == b.get("stop_reason")
    assert _close(runs[0].model, runs[1].model)
    if "last_check" in a:
        assert a["last_check"].keys() == b["last_check"].keys()
        assert all(a["last_check"][k] == pytest.approx(b["last_check"][k], abs=1e-5) for k in a["last_check"])


def test_cached_features_on_a_causal_lm_with_mask_and_ignored_labels() -> None:
    torch.manual_seed(0)
    model = build_model(
        {
            "name": "tiny-transformer",
            "config": {"vocab_size": 13, "max_len": 10, "d_model": 16, "n_layers": 1, "n_heads": 2},
        }
    )
    ids = torch.randint(0, 13, (24, 10))
    mask = torch.ones_like(ids)
    mask[::3, 7:] = 0  # right padding on some sequences
    labels = ids.clone()
    labels[:, :3] = -100  # a prompt the loss ignores
    forget = {"input_ids": ids[:12], "attention_mask": mask[:12], "labels": labels[:12]}
    ev = {"input_ids": ids[12:], "attention_mask": mask[12:]}
    params = {
        "preset": "adaptive",
        "early_stop": "mia",
        "mia_target": 0.0,
        "max_epochs": 5,
        "top_fraction": 1.0,
    }
    runs = [unlearn("imu", model, forget, {**params, "cache_features": c}, eval=ev) for c in (True, False)]
    a, b = (r.report for r in runs)
    assert a["features_cached"] and not b["features_cached"] and a["steps"] == b["steps"] == 5
    assert _close(runs[0].model, runs[1].model)
    assert all(a["last_check"][k] == pytest.approx(b["last_check"][k], abs=1e-5) for k in a["last_check"])
    assert a["after"]["forget_loss"] > a["before"]["forget_loss"]


class TwiceHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.head(x)))


@pytest.mark.parametrize(
    ("model", "target", "reason"),
    [
        ("lenet", "conv.3", "one nn.Linear"),
        ("lenet", "all", "one nn.Linear"),
        ("twice", None, "more than once"),
    ],
)
def test_feature_cache_falls_back_to_the_full_forward(model: str, target: str | None, reason: str) -> None:
    torch.manual_seed(0)
    if model == "lenet":
        net = build_model({"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}})
        data = {"inputs": torch.rand(16, 1, 8, 8), "labels": torch.arange(16) % 10}
    else:
        net = TwiceHead()
        data = {"inputs": torch.rand(16, 64), "labels": torch.arange(16) % 10}
    rep = unlearn("ga", net, data, {"target": target, "epochs": 2}).report
    assert not rep["features_cached"] and reason in rep["feature_cache_skipped"]
    assert rep["steps"] == 2


def test_lenet_head_is_cached_and_matches(digits: dict) -> None:
    torch.manual_seed(0)
    net = build_model({"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}})
    f = {
        "inputs": digits["random_forget"]["inputs"].reshape(-1, 1, 8, 8),
        "labels": digits["random_forget"]["labels"],
    }
    params = {"preset": "official", "bn_mode": "eval", "epochs": 3}
    runs = [unlearn("ga", net, f, {**params, "cache_features": c}) for c in (True, False)]
    assert runs[0].report["features_cached"] and not runs[1].report["features_cached"]
    assert _close(runs[0].model, runs[1].model)
