"""Every method through the one entry point ``unlearn``: contract, safety, determinism, forgetting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearning.errors import CancelledError, DivergedError, ParamsError
from unlearning.methods import get_method, list_methods, recommended_params, unlearn
from unlearning.samples import take
from unlearning.training import train
from unlearning.verification import evaluate


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def digits() -> dict[str, object]:
    """sklearn digits, an MLP trained to >99% train accuracy; forget = a random 10% of the train set."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1200], perm[1200:]
    torch.manual_seed(0)
    model = MLP()
    train(model, {"inputs": x[tr], "labels": y[tr]}, epochs=30, lr=1e-2, batch_size=128, device="cpu")
    assert evaluate(model, {"inputs": x[tr], "labels": y[tr]})["accuracy"] > 0.99
    return {
        "model": model,
        "forget": {"inputs": x[tr[:120]], "labels": y[tr[:120]]},
        "retain": {"inputs": x[tr[120:]], "labels": y[tr[120:]]},
        "eval": {"inputs": x[te], "labels": y[te]},
    }


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _changed(before: nn.Module, after: nn.Module) -> set[str]:
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    return {k for k in a if not torch.equal(a[k].detach(), b[k].detach())}


def test_registry() -> None:
    assert {"imu", "ga", "npo", "iau", "retrain"} <= set(list_methods())
    assert get_method("iau").requires_retain and get_method("retrain").requires_retain
    assert not get_method("imu").requires_retain and not get_method("npo").requires_retain
    with pytest.raises(ParamsError, match="imu"):  # lists the known methods
        get_method("nope")


def test_bad_params_are_rejected(digits: dict) -> None:
    m, f = digits["model"], digits["forget"]
    with pytest.raises(ParamsError, match="learning_rate"):
        unlearn("imu", m, f, {"learning_rate": 0.1})
    with pytest.raises(ParamsError, match="top_fraction"):
        unlearn("imu", m, f, {"top_fraction": 1.5})
    with pytest.raises(ParamsError, match="step_schedule"):
        unlearn("ga", m, f, {"step_schedule": "cosine"})
    with pytest.raises(ParamsError, match="eval"):
        unlearn("imu", m, f, {"early_stop": "eval_accuracy"})  # needs an eval set
    with pytest.raises(ParamsError, match="retain"):
        unlearn("iau", m, f)
    with pytest.raises(ParamsError, match="unknown method"):
        unlearn("magic", m, f)


def test_imu_official_preset_changes_only_the_head(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    before = _snapshot(m)
    res = unlearn("imu", m, f, {"preset": "official"}, eval=ev, device="cpu")
    assert _same(before, _snapshot(m))  # input model untouched
    rep = res.report
    p = rep["params"]
    assert (p["lr"], p["momentum"], p["weight_decay"], p["alpha"], p["epochs"], p["batch_size"]) == (
        0.01,
        0.9,
        5e-4,
        0.2,
        10,
        256,
    )
    assert (p["top_fraction"], p["clip_quantile"], p["milestones"]) == (0.1, 0.93, [91, 136])
    assert _changed(m, res.model) == {"head.weight", "head.bias"}
    assert rep["n_selected"] == max(int(rep["n_negative"] * 0.1), 1)
    assert rep["epochs_run"] == 10 and rep["influence_path"] == "closed_form"
    assert p["step_schedule"] == "constant" and rep["step_schedule"] == "constant"
    assert (p["bn_mode"], p["objective"], p["anchor"], rep["objective"]) == (
        "train",
        "ascent",
        "none",
        "ascent",
    )
    assert (rep["steps"], rep["checks"], rep["backtracks"], rep["final_step_size"]) == (10, 0, 0, 0.01)
    assert set(rep["before"]) == {"forget_accuracy", "forget_loss", "eval_accuracy", "eval_loss", "mia_auc"}
    assert rep["param_l2_change"] > 0 and rep["elapsed_s"] > 0 and rep["device"] == "cpu"
    assert next(res.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("method", ["imu", "ga", "npo"])
def test_no_params_run_the_recommended_anchored_preset(digits: dict, method: str) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    res = unlearn(method, m, f, eval=ev, device="cpu")
    rep = res.report
    p = rep["params"]
    assert (p["preset"], p["target"], p["optimizer"], p["anchor"]) == ("anchored", "all", "adam", "auto")
    assert get_method(method).parse_params(recommended_params(method)).model_dump() == (
        get_method(method).parse_params(None).model_dump()
    )  # the service's and the CLI's params are the engine's defaults
    if method == "npo":
        assert _changed(m, res.model) == {n for n, _ in m.named_parameters()}  # target "all"
    else:
        # A random 10% of digits on a model that generalises already looks unseen: no step.
        assert rep["stop_reason"] == "already_unseen" and not _changed(m, res.model)
    # Classification, samples scope: loss matching (npo: NPO) with the KL anchor, resolved.
    assert rep["objective"] == ("npo" if method == "npo" else "match") and rep["anchor"] == "kl"
    split = rep["eval_split"]
    assert split["n_anchor"] + split["n_check"] == 597 and split["n_anchor"] == rep["n_anchor"]
    assert not set(split["anchor_indices"]) & set(split["check_indices"])


def test_report_is_measured_on_the_check_half(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    rep = unlearn("ga", m, f, {"preset": "adaptive"}, eval=ev, device="cpu", seed=4).report
    check = take(ev, torch.tensor(rep["eval_split"]["check_indices"]))
    assert rep["before"]["eval_accuracy"] == pytest.approx(evaluate(m, check)["accuracy"], abs=1e-9)
    whole = unlearn("ga", m, f, {"preset": "adaptive"}, eval=ev, device="cpu", seed=4, eval_split=False)
    assert "eval_split" not in whole.report
    assert whole.report["before"]["eval_accuracy"] == pytest.approx(evaluate(m, ev)["accuracy"], abs=1e-9)


def test_imu_early_stop_reaches_eval_accuracy(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    res = unlearn("imu", m, f, {"preset": "adaptive", "max_eval_drop": None}, eval=ev, device="cpu")
    rep = res.report
    assert rep["before"]["forget_accuracy"] > rep["before"]["eval_accuracy"]
    assert rep["stopped_early"] and rep["target_reached"] and rep["stop_reason"] == "target_reached"
    assert rep["after"]["forget_accuracy"] <= rep["after"]["eval_accuracy"]
    assert rep["epochs_run"] < rep["params"]["max_epochs"]


def test_imu_utility_guard_keeps_eval_accuracy(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    # The guard holds on the eval samples the method sees: the whole set here.
    res = unlearn(
        "imu", m, f, {"preset": "adaptive", "max_eval_drop": 0.01}, eval=ev, device="cpu", eval_split=False
    )
    rep = res.report
    assert rep["params"]["lr_mode"] == "relative" and rep["params"]["alpha"] == 0.0
    assert rep["after"]["eval_accuracy"] >= rep["before"]["eval_accuracy"] - 0.01
    assert rep["stop_reason"] in {"max_eval_drop", "target_reached"}


def test_ga_and_recompute_run(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    res = unlearn("ga", m, f, {"preset": "official", "epochs": 2}, eval=ev, device="cpu")
    assert res.report["n_selected"] == 120 and _changed(m, res.model) == {"head.weight", "head.bias"}
    res = unlearn(
        "imu",
        m,
        f,
        {"preset": "official", "epochs": 3, "recompute": "epoch", "target": "body.0"},
        device="cpu",
    )
    assert len(res.report["n_selected_per_epoch"]) == 3
    assert res.report["influence_path"] == "func"
    assert _changed(m, res.model) == {"body.0.weight", "body.0.bias"}


def test_iau_updates_all_parameters(digits: dict) -> None:
    m = digits["model"]
    res = unlearn("iau", m, digits["forget"], retain=digits["retain"], eval=digits["eval"], device="cpu")
    assert _changed(m, res.model) == {n for n, _ in m.named_parameters()}
    # the first Adam step moves every coordinate by ≈ lr
    step = (res.model.head.bias - m.head.bias).detach().abs()
    assert float(step.max()) == pytest.approx(1e-3, rel=1e-2)


def test_retrain_builds_a_fresh_model(digits: dict) -> None:
    m = digits["model"]
    res = unlearn(
        "retrain",
        m,
        digits["forget"],
        {"epochs": 8, "lr": 1e-2, "batch_size": 128},
        retain=digits["retain"],
        device="cpu",
    )
    assert res.report["recipe"]["epochs"] == 8 and res.report["recipe"]["optimizer"] == "adam"
    assert _changed(m, res.model) == {n for n, _ in m.named_parameters()}
    assert evaluate(res.model, digits["retain"])["accuracy"] > 0.9


def test_divergence_leaves_input_untouched(digits: dict) -> None:
    m, f = digits["model"], digits["forget"]
    before = _snapshot(m)
    with pytest.raises(DivergedError):
        # relative steps of 100·‖θ‖ grow θ geometrically until it overflows
        unlearn(
            "ga",
            m,
            f,
            {"preset": "official", "lr_mode": "relative", "lr": 100.0, "alpha": 0.0, "epochs": 100},
        )
    assert _same(before, _snapshot(m))


def test_cancel_and_progress(digits: dict) -> None:
    m, f, ev = digits["model"], digits["forget"], digits["eval"]
    seen: list[tuple[str, float]] = []
    unlearn(
        "imu", m, f, {"preset": "official", "epochs": 4}, eval=ev, progress=lambda s, x: seen.append((s, x))
    )
    fractions = [x for _, x in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {"influence", "unlearn", "verify"} <= {s for s, _ in seen}
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    before = _snapshot(m)
    with pytest.raises(CancelledError):
        unlearn("imu", m, f, {"preset": "official", "epochs": 50}, device="cpu", should_cancel=cancel)
    assert _same(before, _snapshot(m))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("imu", {}),
        ("ga", {}),
        ("npo", {}),
        ("iau", {}),
        ("imu", {"preset": "official"}),
        ("ga", {"preset": "adaptive"}),
    ],
)
def test_same_seed_is_bit_identical(digits: dict, method: str, params: dict) -> None:
    kw = {"retain": digits["retain"], "eval": digits["eval"], "device": "cpu", "seed": 3}
    a = unlearn(method, digits["model"], digits["forget"], params, **kw)
    b = unlearn(method, digits["model"], digits["forget"], params, **kw)
    assert _same(a.state_dict, b.state_dict)
    assert a.report.get("steps") == b.report.get("steps")


def test_imu_on_a_causal_lm() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(11, 16)
            self.head = nn.Linear(16, 11)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.emb(ids)))

    torch.manual_seed(0)
    ids = torch.randint(0, 11, (40, 8))
    model = LM()
    train(model, {"input_ids": ids}, epochs=15, lr=2e-2, batch_size=20, device="cpu")
    forget, ev = {"input_ids": ids[:8]}, {"input_ids": torch.randint(0, 11, (16, 8))}
    res = unlearn(
        "imu", model, forget, {"preset": "adaptive", "max_eval_drop": None, "lr": 0.02}, eval=ev, device="cpu"
    )
    rep = res.report
    assert rep["influence_path"] == "closed_form"
    assert _changed(model, res.model) == {"head.weight", "head.bias"}
    assert rep["after"]["forget_loss"] > rep["before"]["forget_loss"]


class _WithUnused(nn.Module):
    """A model with a parameter outside its forward pass (e.g. a plug-in's spare head)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.spare = nn.Linear(2, 2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("iau", {}),
        ("ga", {"preset": "official", "target": "all", "alpha": 0}),
        ("imu", {"preset": "official", "target": "all", "influence_method": "loop", "alpha": 0}),
        ("imu", {"target": "all", "preset": "adaptive", "epochs": 1, "max_epochs": 1}),
        ("npo", {"epochs": 1}),
    ],
)
def test_parameters_outside_the_forward_are_left_alone(method: str, params: dict) -> None:
    # autograd.grad used to raise "appears to not have been used in the graph" on them.
    torch.manual_seed(0)
    m, x, y = _WithUnused(), torch.randn(20, 4), torch.randint(0, 3, (20,))
    res = unlearn(
        method, m, {"inputs": x[:5], "labels": y[:5]}, params, retain={"inputs": x[5:], "labels": y[5:]}
    )
    changed = _changed(m, res.model)
    assert "head.weight" in changed
    assert not {"spare.weight", "spare.bias"} & changed
