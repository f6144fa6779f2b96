"""The retain-based methods (scrub, neggrad_plus, finetune; iau and retrain for the shared contract).

Two small setups: an MLP that memorises noisy labels (random forgetting: a retrained model scores on
the forget samples what it scores on unseen ones) and a digits MLP with one class forgotten (a
retrained model never predicts it).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from unlearning.errors import CancelledError, DivergedError, ParamsError
from unlearning.methods import get_method, list_methods, unlearn
from unlearning.methods.retain_loop import RetainLoopParams, resolve_scope
from unlearning.methods.scrub import kl_to_teacher
from unlearning.training import train
from unlearning.verification import evaluate, per_sample_metrics

APPROXIMATE = ["scrub", "neggrad_plus", "finetune"]
RETAIN_METHODS = [*APPROXIMATE, "iau", "retrain"]
FAST = {"retrain": {"epochs": 2}}  # the contract tests need no converged retraining

Data = dict[str, torch.Tensor]


def _mlp(d_in: int, n_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 128), nn.ReLU(), nn.Linear(128, n_out))


def _fit(data: Data, d_in: int, n_out: int, epochs: int) -> nn.Module:
    model = _mlp(d_in, n_out, seed=0)
    train(model, data, epochs=epochs, lr=3e-3, batch_size=32, device="cpu", seed=0)
    return model


def _take(data: Data, idx: torch.Tensor) -> Data:
    return {k: v[idx] for k, v in data.items()}


@pytest.fixture(scope="module")
def memorised() -> dict[str, Any]:
    """Labels of a random linear teacher, 30% flipped: the MLP memorises its 300 training samples."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g)

    def sample(n: int) -> Data:
        x = torch.randn(n, 16, generator=g)
        y = (x @ w).argmax(1)
        flip = torch.rand(n, generator=g) < 0.3
        y[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=g)
        return {"inputs": x, "labels": y}

    data, test = sample(300), sample(400)
    perm = torch.randperm(300, generator=g)
    forget, retain = _take(data, perm[:30]), _take(data, perm[30:])
    model = _fit(data, 16, 4, epochs=60)
    assert evaluate(model, data)["accuracy"] == 1.0
    reference = _fit(retain, 16, 4, epochs=60)
    eval_set, test_set = _take(test, torch.arange(200)), _take(test, torch.arange(200, 400))
    return {"model": model, "forget": forget, "retain": retain, "eval": eval_set, "test": test_set,
            "reference": reference}  # fmt: skip


@pytest.fixture(scope="module")
def digits_class() -> dict[str, Any]:
    """A digits MLP; the forget set is every training sample of digit 3."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train_set, test = (
        _take({"inputs": x, "labels": y}, perm[:1200]),
        _take({"inputs": x, "labels": y}, perm[1200:]),
    )
    gone = train_set["labels"] == 3
    model = _fit(train_set, 64, 10, epochs=15)
    others = test["labels"] != 3
    return {"model": model, "forget": _take(train_set, gone), "retain": _take(train_set, ~gone),
            "eval": test, "test_others": _take(test, others)}  # fmt: skip


def _run(setup: dict[str, Any], method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
    return unlearn(
        method, setup["model"], setup["forget"], params if params is not None else FAST.get(method, {}),
        retain=setup["retain"], eval=setup["eval"], device="cpu", **kw,
    )  # fmt: skip


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _acc(model: nn.Module, data: Data) -> float:
    return evaluate(model, data)["accuracy"]


def evaluate_per_sample(model: nn.Module, data: Data) -> torch.Tensor:
    return per_sample_metrics(model, data)[1]


def test_registered_as_retain_methods() -> None:
    assert set(RETAIN_METHODS) <= set(list_methods())
    for name in RETAIN_METHODS:
        assert get_method(name).requires_retain, name


@pytest.mark.parametrize("method", RETAIN_METHODS)
def test_missing_retain_set_is_refused(memorised: dict[str, Any], method: str) -> None:
    with pytest.raises(ParamsError, match=f"method '{method}' needs the retain set"):
        unlearn(method, memorised["model"], memorised["forget"], eval=memorised["eval"], device="cpu")
    empty = {k: v[:0] for k, v in memorised["retain"].items()}
    with pytest.raises(ParamsError, match="retain"):
        unlearn(method, memorised["model"], memorised["forget"], retain=empty, device="cpu")


@pytest.mark.parametrize("method", APPROXIMATE)
def test_unknown_or_out_of_range_params_are_refused(memorised: dict[str, Any], method: str) -> None:
    with pytest.raises(ParamsError, match="learning_rate"):
        _run(memorised, method, {"learning_rate": 0.1})
    with pytest.raises(ParamsError, match="lr"):
        _run(memorised, method, {"lr": -1})
    with pytest.raises(ParamsError, match="scope"):
        _run(memorised, method, {"scope": "everything"})


# Epochs are passes over the retain set: this one is small (3 batches), so more of them than the
# defaults (measured on larger sets) for the forget term to get its steps; SCRUB's default lr
# (1e-3, measured on the MNIST-1D benchmark) forgets too little on this model within them.
LONGER: dict[str, dict[str, Any]] = {
    "scrub": {"epochs": 60, "max_epochs": 60, "lr": 3e-3},
    "neggrad_plus": {"epochs": 60},
}


@pytest.mark.parametrize("method", ["scrub", "neggrad_plus"])
def test_random_forgetting_approaches_the_retrained_model(memorised: dict[str, Any], method: str) -> None:
    m, ref, f = memorised["model"], memorised["reference"], memorised["forget"]
    res = _run(memorised, method, LONGER[method])
    target = _acc(ref, f)  # what a model that never saw the forget samples scores on them
    before, after = _acc(m, f), _acc(res.model, f)
    assert before == 1.0 and target < 0.8
    assert abs(after - target) < 0.5 * abs(before - target)
    assert res.report["scope"] == "samples" and res.report["stop_reason"] == "target_reached"
    # the target: the original model's accuracy on (the half of the eval set the method sees)
    assert abs(res.report["forget_accuracy_target"] - _acc(m, memorised["eval"])) < 0.1
    assert _acc(res.model, memorised["retain"]) >= 0.95
    assert _acc(res.model, memorised["test"]) >= _acc(m, memorised["test"]) - 0.1


def test_neggrad_plus_defaults_repair_three_quarters_of_the_forgetting_steps(
    memorised: dict[str, Any],
) -> None:
    # The measured defaults (β 0.93, repair_fraction 0.75; docs/methods.md): once the forget target
    # is first reached after s steps, the run takes ⌈0.75·s⌉ more, the ascent on again whenever a
    # check is above the target, and the repaired model keeps the retain set.
    res = _run(memorised, "neggrad_plus", LONGER["neggrad_plus"])
    assert res.report["params"]["beta"] == 0.93 and res.report["params"]["repair_fraction"] == 0.75
    s = res.report["target_reached_at_step"]
    assert res.report["stop_reason"] == "target_reached" and s > 0
    assert res.report["steps"] == s + math.ceil(0.75 * s)
    assert res.report["ascent_steps"] >= s
    assert _acc(res.model, memorised["retain"]) >= 0.95


def test_finetune_moves_towards_the_retrained_model(memorised: dict[str, Any]) -> None:
    # Fine-tuning is the weak baseline on memorised samples (their gradients all but vanish): it
    # moves the forget accuracy down, not all the way.
    m, f = memorised["model"], memorised["forget"]
    res = _run(memorised, "finetune", {"epochs": 20})
    assert _acc(res.model, f) < _acc(m, f)
    assert _acc(res.model, memorised["retain"]) >= 0.95


@pytest.mark.parametrize("method", APPROXIMATE)
def test_class_forgetting_reaches_the_retrained_level(digits_class: dict[str, Any], method: str) -> None:
    m = digits_class["model"]
    res = _run(digits_class, method, {})
    assert res.report["scope"] == "class"  # auto: no retain sample is a 3
    assert _acc(m, digits_class["forget"]) > 0.95
    assert _acc(res.model, digits_class["forget"]) == 0.0  # a model retrained without 3s never says 3
    assert _acc(res.model, digits_class["retain"]) >= 0.97
    assert _acc(res.model, digits_class["test_others"]) >= _acc(m, digits_class["test_others"]) - 0.03


@pytest.mark.parametrize("method", RETAIN_METHODS)
def test_same_seed_is_bit_identical_and_the_input_is_untouched(
    memorised: dict[str, Any], method: str
) -> None:
    before = _snapshot(memorised["model"])
    a, b = _run(memorised, method, seed=5), _run(memorised, method, seed=5)
    assert _same(before, _snapshot(memorised["model"]))
    assert _same(a.state_dict, b.state_dict)
    assert not _same(before, a.state_dict)
    assert a.report.get("steps") == b.report.get("steps")


@pytest.mark.parametrize("method", APPROXIMATE)
def test_another_seed_shuffles_differently(memorised: dict[str, Any], method: str) -> None:
    a, b = _run(memorised, method, seed=1), _run(memorised, method, seed=2)
    assert not _same(a.state_dict, b.state_dict)


@pytest.mark.parametrize("method", RETAIN_METHODS)
def test_cancellation_stops_the_run_and_leaves_the_input(memorised: dict[str, Any], method: str) -> None:
    before = _snapshot(memorised["model"])
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 4

    with pytest.raises(CancelledError):
        _run(memorised, method, should_cancel=cancel)
    assert _same(before, _snapshot(memorised["model"]))


@pytest.mark.parametrize("method", APPROXIMATE)
def test_progress_is_monotone_and_complete(memorised: dict[str, Any], method: str) -> None:
    seen: list[tuple[str, float]] = []
    _run(memorised, method, progress=lambda stage, x: seen.append((stage, x)))
    fractions = [x for _, x in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "unlearn" in {s for s, _ in seen}


@pytest.mark.parametrize("method", ["scrub", "neggrad_plus"])
def test_divergence_raises_and_leaves_the_input(memorised: dict[str, Any], method: str) -> None:
    before = _snapshot(memorised["model"])
    # plain SGD ascent at lr 10 with no target to stop it: the logits grow until they overflow
    params: dict[str, Any] = {
        "optimizer": "sgd",
        "lr": 10,
        "momentum": 0.0,
        "early_stop": False,
        "epochs": 300,
    }
    params |= (
        {"beta": 0.01}
        if method == "neggrad_plus"
        else {"kl_weight": 0.0, "ce_weight": 0.0, "max_epochs": 300}
    )
    with pytest.raises(DivergedError):
        _run(memorised, method, params)
    assert _same(before, _snapshot(memorised["model"]))


@pytest.mark.parametrize("method", APPROXIMATE)
def test_target_already_reached_takes_no_step(memorised: dict[str, Any], method: str) -> None:
    # Unseen samples the model gets wrong: as a forget set they are already "forgotten".
    unseen = memorised["test"]
    wrong = _take(unseen, evaluate_per_sample(memorised["model"], unseen) == 0)
    res = unlearn(method, memorised["model"], wrong, retain=memorised["retain"], eval=memorised["eval"],
                  device="cpu")  # fmt: skip
    assert res.report["steps"] == 0 and res.report["target_reached_at_step"] == 0
    assert _same(_snapshot(memorised["model"]), res.state_dict)


def test_without_an_eval_set_the_schedule_runs_in_full(memorised: dict[str, Any]) -> None:
    res = unlearn("neggrad_plus", memorised["model"], memorised["forget"], {"epochs": 2},
                  retain=memorised["retain"], device="cpu")  # fmt: skip
    rep = res.report
    assert rep["forget_accuracy_target"] is None and rep["stop_reason"] == "epochs"
    assert rep["epochs_run"] == 2 and rep["steps"] == 2 * 3  # 270 retain samples in batches of 128


def test_scope_auto_reads_the_retain_set(memorised: dict[str, Any], digits_class: dict[str, Any]) -> None:
    auto = RetainLoopParams.model_validate({})
    assert resolve_scope(auto, memorised["forget"], memorised["retain"]) == "samples"
    assert resolve_scope(auto, digits_class["forget"], digits_class["retain"]) == "class"
    explicit = RetainLoopParams.model_validate({"scope": "samples"})
    assert resolve_scope(explicit, digits_class["forget"], digits_class["retain"]) == "samples"
    lm = {"input_ids": torch.zeros(2, 4, dtype=torch.long)}
    assert resolve_scope(auto, lm, lm) == "samples"


def test_kl_to_teacher_is_zero_at_the_teacher_and_masks_lm_padding() -> None:
    z = torch.randn(3, 5)
    assert torch.allclose(kl_to_teacher(z, z, {}, "classification", 2.0), torch.zeros(3), atol=1e-6)
    s, t = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    batch = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    }
    kl = kl_to_teacher(s, t, batch, "causal-lm", 1.0)
    t2 = t.clone()
    t2[1, 1:] = torch.randn(3, 7)  # row 1 predicts padding from position 1 on: those outputs do not count
    assert torch.allclose(kl, kl_to_teacher(s, t2, batch, "causal-lm", 1.0))
    assert bool((kl > 0).all())


@pytest.mark.parametrize("method", APPROXIMATE)
def test_causal_lm(method: str) -> None:
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
    res = unlearn(method, model, {"input_ids": ids[:8]}, {"early_stop": False, "epochs": 2},
                  retain={"input_ids": ids[8:]}, device="cpu")  # fmt: skip
    assert res.report["scope"] == "samples" and res.report["steps"] > 0
    if method != "finetune":
        assert res.report["after"]["forget_loss"] > res.report["before"]["forget_loss"]
