"""Confidence matching, the classifier's default forget objective (``confidence_matching.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unlearning import ParamsError, unlearn
from unlearning.membership import confidence_from_logits, logit_confidence
from unlearning.methods.ascent.confidence_matching import TARGET_KEY, ConfidenceMatching
from unlearning.methods.ascent.objective import ObjectiveData
from unlearning.methods.ascent.params import AscentParams
from unlearning.methods.ascent.plan import plan_checks
from unlearning.training import train


def _data(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randn(n, 6, generator=g), "labels": torch.randint(0, 4, (n,), generator=g)}


def _prepared(net: nn.Module, forget: dict, unseen: dict) -> tuple[ConfidenceMatching, torch.Tensor]:
    cm = ConfidenceMatching()
    extras = cm.prepare(
        ObjectiveData(
            net=net, forget=forget, anchor=None, unseen=unseen, task="classification",
            device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
        )
    )  # fmt: skip
    return cm, extras[TARGET_KEY]


def test_confidence_is_the_log_odds_of_the_label() -> None:
    z = torch.randn(50, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (50,))
    p = z.softmax(-1).gather(1, y.view(-1, 1)).squeeze(1)
    want = torch.log(p) - torch.log1p(-p)
    assert torch.allclose(confidence_from_logits(z, y), want, atol=1e-9)
    # Stable where the naive form is not: a memorised sample's p_y rounds to 1.
    sure = torch.tensor([[60.0, 0.0, 0.0]])
    phi = float(confidence_from_logits(sure, torch.tensor([0])))
    assert phi == pytest.approx(60.0 - math.log(2.0))


def test_targets_are_unseen_quantiles_in_the_originals_rank_order() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    forget, unseen = _data(40, 1), _data(200, 2)
    cm, targets = _prepared(net, forget, unseen)
    phi = logit_confidence(net, forget).float()
    # The most confident forget sample gets the highest target, the least the lowest: same order.
    assert torch.equal(torch.argsort(targets), torch.argsort(phi))
    assert cm.targets is not None
    unseen_phi = logit_confidence(net, unseen).float()
    assert float(targets.min()) >= float(unseen_phi.min()) - 1e-5
    assert float(targets.max()) <= float(unseen_phi.max()) + 1e-5
    assert cm.describe()["match_on"] == "confidence"


def test_one_sided_a_sample_below_its_target_is_left_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4))
    batch = _data(2, 3)
    phi = confidence_from_logits(net(batch["inputs"]), batch["labels"], dtype=torch.float32).detach()
    cm = ConfidenceMatching()
    below = {**batch, TARGET_KEY: phi + torch.tensor([1.0, 1.0])}  # both under their targets
    loss = cm(net, below, torch.ones(2), "classification")
    assert float(loss.detach()) == 0.0
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)
    above = {**batch, TARGET_KEY: phi - torch.tensor([3.0, 0.0])}  # the first 3 above, the other at
    loss = cm(net, above, torch.ones(2), "classification")
    # Huber (δ = 1) of an excess of 3 is 3 − 1/2; the sample at its target adds nothing.
    assert float(loss.detach()) == pytest.approx((3.0 - 0.5) / 2, abs=1e-4)


def test_classifier_default_matches_confidence_and_forgets() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 4))
    data, ev = _data(120, 4), _data(200, 5)
    train(net, data, epochs=200, lr=1e-2, batch_size=120, device="cpu")  # memorises random labels
    forget = {k: v[:24] for k, v in data.items()}
    before = logit_confidence(net, forget)
    res = unlearn("ga", net, forget, eval=ev, device="cpu", seed=0)
    assert res.report["objective"] == "match" and res.report["match_on"] == "confidence"
    after = logit_confidence(res.model, forget)
    assert float(after.mean()) < float(before.mean()) - 1.0


def test_match_on_resolves_by_task() -> None:
    forget, ev = _data(10, 6), _data(30, 7)
    plan = plan_checks(AscentParams.model_validate({}), forget, ev)
    assert plan.objective == "match" and plan.match_on == "confidence"
    plan = plan_checks(AscentParams.model_validate({"match_on": "loss"}), forget, ev)
    assert plan.match_on == "loss"
    lm = {"input_ids": torch.randint(0, 5, (6, 4))}
    lm_plan = plan_checks(AscentParams.model_validate({"objective": "match"}), lm, lm)
    assert lm_plan.match_on == "loss"
    with pytest.raises(ParamsError, match="classification"):
        plan_checks(AscentParams.model_validate({"objective": "match", "match_on": "confidence"}), lm, lm)
