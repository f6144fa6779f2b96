"""The KL anchor's mixed samples and the by-objective lr: what the anchored preset resolves to."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearning.methods import unlearn
from unlearning.methods.ascent.objective import KLAnchor, ObjectiveData
from unlearning.methods.ascent.params import OBJECTIVE_DEFAULTS
from unlearning.training import train


def _data(n: int, c: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randn(n, 5, generator=g), "labels": torch.randint(0, c, (n,), generator=g)}


def _prepared(
    kl: KLAnchor, net: nn.Module, anchor: dict[str, torch.Tensor], task: str = "classification"
) -> None:
    kl.prepare(
        ObjectiveData(
            net=net, forget=_data(4), anchor=anchor, unseen=None, task=task,  # type: ignore[arg-type]
            device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
        )
    )  # fmt: skip


def test_mixed_anchor_samples_are_new_points_scored_by_the_original() -> None:
    torch.manual_seed(0)
    net, anchor = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)), _data(16)
    mixed = KLAnchor(weight=1.0, batch_size=16, mixup=True)
    plain = KLAnchor(weight=1.0, batch_size=16, mixup=False)
    _prepared(mixed, net, anchor)
    _prepared(plain, net, anchor)
    assert mixed.mixing and not plain.mixing and mixed.describe()["anchor_mixup"] is True
    assert float(mixed(net, {}, torch.ones(1), "classification")) == pytest.approx(0.0, abs=1e-6)
    # Move the net only off the anchor points' span: a change the plain term barely sees at the
    # anchor samples shows between them. Here: the mixed KL term differs from the plain one and
    # both are positive once θ moves.
    with torch.no_grad():
        net[0].weight.add_(0.3 * torch.randn_like(net[0].weight))
    m, p = (
        float(mixed(net, {}, torch.ones(1), "classification")),
        float(plain(net, {}, torch.ones(1), "classification")),
    )
    assert m > 0 and p > 0 and m != pytest.approx(p)
    # The mixed half is a KL on points that are not anchor samples: its teacher is the frozen original.
    assert mixed.frozen is not None and all(not q.requires_grad for q in mixed.frozen.parameters())


def test_token_inputs_are_never_mixed() -> None:
    lm_anchor = {"input_ids": torch.randint(0, 7, (6, 5))}
    kl = KLAnchor(weight=1.0, batch_size=4, mixup=True)
    _prepared(kl, nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7)), lm_anchor, task="causal-lm")
    assert not kl.mixing


def test_anchored_preset_resolves_lr_and_mixup_by_objective() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    data, ev = _data(60), _data(80, seed=5)
    train(net, data, epochs=40, lr=1e-2, batch_size=16, device="cpu")
    forget = {k: v[:12] for k, v in data.items()}
    match = unlearn("ga", net, forget, eval=ev, device="cpu").report
    want = OBJECTIVE_DEFAULTS[("match", "classification")]
    assert match["objective"] == "match"
    assert (match["lr"], match["anchor_mixup"]) == (want["lr"], bool(want["anchor_mixup"]))
    npo = unlearn("npo", net, forget, eval=ev, device="cpu").report
    want = OBJECTIVE_DEFAULTS[("npo", "classification")]
    assert (npo["lr"], npo["anchor_mixup"]) == (want["lr"], bool(want["anchor_mixup"]))
    # Explicit params win over the objective's defaults.
    own = unlearn("ga", net, forget, {"lr": 5e-4, "anchor_mixup": False}, eval=ev, device="cpu").report
    assert (own["lr"], own["anchor_mixup"]) == (5e-4, False)
