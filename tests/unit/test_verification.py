"""Verification metrics: MIA AUC against scikit-learn, evaluate/measure, and reference comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from unlearning.verification import (
    evaluate,
    gap_to_reference,
    measure,
    mia_auc,
    param_l2_change,
    per_sample_losses,
    tug_of_war,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mia_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = rng.exponential(0.5, size=137)
    e = rng.exponential(1.0, size=211)
    # Ties across the two groups, which the ½·P(=) term must count.
    f[:20] = np.round(f[:20], 1)
    e[:30] = np.round(e[:30], 1)
    labels = np.r_[np.ones_like(f), np.zeros_like(e)]
    expected = roc_auc_score(labels, -np.r_[f, e])  # lower loss ⇒ member
    assert mia_auc(torch.tensor(f), torch.tensor(e)) == pytest.approx(expected, abs=1e-12)


def test_mia_auc_extremes() -> None:
    assert mia_auc(torch.zeros(5), torch.ones(7)) == 1.0
    assert mia_auc(torch.ones(5), torch.zeros(7)) == 0.0
    assert mia_auc(torch.ones(5), torch.ones(7)) == 0.5
    assert math.isnan(mia_auc(torch.zeros(0), torch.ones(3)))


def test_evaluate_and_measure() -> None:
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2) * 10)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])  # three right, one wrong
    res = evaluate(model, {"inputs": x, "labels": y}, batch_size=3)
    assert res["accuracy"] == pytest.approx(0.75)
    losses = per_sample_losses(model, {"inputs": x, "labels": y})
    assert res["loss"] == pytest.approx(float(losses.mean()), rel=1e-6)
    assert float(losses[2]) == pytest.approx(10.0, abs=1e-3)
    m = measure(model, {"inputs": x[:2], "labels": y[:2]})
    assert set(m) == {"forget_accuracy", "forget_loss"}
    m = measure(model, {"inputs": x[:2], "labels": y[:2]}, {"inputs": x[2:], "labels": y[2:]})
    assert set(m) == {"forget_accuracy", "forget_loss", "eval_accuracy", "eval_loss", "mia_auc"}
    assert m["forget_accuracy"] == 1.0 and m["eval_accuracy"] == 0.5
    assert m["mia_auc"] > 0.5


def test_causal_lm_accuracy_is_next_token() -> None:
    class Echo(nn.Module):  # predicts "same token again"
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(ids, 5).float() * 20

    ids = torch.tensor([[1, 1, 1, 1], [1, 2, 3, 4]])
    res = evaluate(Echo(), {"input_ids": ids})
    assert res["accuracy"] == pytest.approx(0.5)  # sequence 0: 3/3, sequence 1: 0/3


def test_param_l2_change() -> None:
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert param_l2_change(a, b) == 0.0
    with torch.no_grad():
        b.weight[0, 0] += 3.0
        b.bias[1] -= 4.0
    assert param_l2_change(a, b) == pytest.approx(5.0)


def test_gap_and_tow() -> None:
    ours = {"forget_accuracy": 0.9, "retain_accuracy": 0.95, "test_accuracy": 0.8, "mia_auc": 0.6}
    ref = {"forget_accuracy": 0.8, "retain_accuracy": 0.99, "test_accuracy": 0.82, "mia_auc": 0.5}
    res = gap_to_reference(ours, ref)
    assert res["gaps"]["forget_accuracy"] == pytest.approx(0.1)
    assert res["avg_gap"] == pytest.approx((0.1 + 0.04 + 0.02 + 0.1) / 4)
    assert tug_of_war(ours, ref) == pytest.approx(0.9 * 0.96 * 0.98)
    assert tug_of_war(ref, ref) == 1.0
