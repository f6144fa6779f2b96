"""Plain training and IAU's Gradient Restriction loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearning.errors import CancelledError, ParamsError
from unlearning.training import gradient_restriction_loss, train
from unlearning.verification import evaluate


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    return {"inputs": x, "labels": (x[:, 0] + x[:, 1] > 0).long()}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def test_train_learns_and_records_recipe() -> None:
    data, model = _data(), _model()
    before = evaluate(model, data)["loss"]
    fractions: list[float] = []
    rec = train(
        model,
        data,
        epochs=15,
        lr=1e-2,
        batch_size=32,
        device="cpu",
        progress=lambda _s, f: fractions.append(f),
    )
    assert evaluate(model, data)["loss"] < before * 0.5
    assert evaluate(model, data)["accuracy"] > 0.9
    assert rec["epochs"] == 15 and rec["optimizer"] == "adam" and len(rec["loss_history"]) == 15
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_train_is_deterministic() -> None:
    a, b = _model(), _model()
    train(a, _data(), epochs=3, lr=1e-2, seed=5, device="cpu")
    train(b, _data(), epochs=3, lr=1e-2, seed=5, device="cpu")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_gradient_restriction_loss_value_and_effect() -> None:
    model, data = _model(), _data()
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(data["inputs"]), data["labels"])
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    expected = loss + 0.5 * sum(g.norm() for g in grads)
    got = gradient_restriction_loss(loss, params, 0.5)
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    got.backward()  # double backprop works
    assert all(p.grad is not None for p in params)
    plain, gr = _model(), _model()
    train(plain, data, epochs=2, lr=1e-2, device="cpu")
    rec = train(gr, data, epochs=2, lr=1e-2, device="cpu", gradient_restriction_alpha=0.005)
    assert rec["gradient_restriction_alpha"] == 0.005
    assert any(not torch.equal(p, q) for p, q in zip(plain.parameters(), gr.parameters(), strict=True))


def test_train_cancel_and_bad_args() -> None:
    with pytest.raises(CancelledError):
        train(_model(), _data(), epochs=2, lr=1e-2, device="cpu", should_cancel=lambda: True)
    with pytest.raises(ParamsError):
        train(_model(), _data(), epochs=1, lr=1e-2, optimizer="lbfgs", device="cpu")
