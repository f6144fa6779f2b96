"""IMU steps 1–5: the three per-sample gradient paths agree, and selection follows the official rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearning.errors import ParamsError
from unlearning.influence import (
    imu_sample_weights,
    influence_scores,
    per_sample_gradients,
    resolve_target,
    select_weights,
)

PATHS = ("closed_form", "func", "loop")


class MLP(nn.Module):
    def __init__(self, d_in: int = 6, hidden: int = 9, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 13, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        # causal running mean: position t sees tokens ≤ t only
        h = h.cumsum(1) / torch.arange(1, h.shape[1] + 1).view(1, -1, 1)
        return self.lm_head(torch.tanh(self.mix(h)))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    assert float((a - b).abs().max() / scale) < rtol


@pytest.fixture
def cls_data() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = MLP().double()
    data = {"inputs": torch.randn(40, 6, dtype=torch.float64), "labels": torch.randint(0, 4, (40,))}
    return model, data


def test_three_paths_agree_on_mlp_head(cls_data: tuple[nn.Module, dict[str, torch.Tensor]]) -> None:
    model, data = cls_data
    grads = {p: per_sample_gradients(model, data, method=p) for p in PATHS}
    assert grads["loop"].shape == (40, 4 * 9 + 4)
    assert float(grads["loop"].abs().max()) > 0
    for p in ("closed_form", "func"):
        _close(grads[p], grads["loop"])
    res = {p: influence_scores(model, data, method=p) for p in PATHS}
    for p in ("closed_form", "func"):
        assert res[p].path == p
        _close(res[p].influence, res["loop"].influence)
        _close(res[p].fisher, res["loop"].fisher)
        _close(res[p].mean_grad, res["loop"].mean_grad)
    # The definitions themselves: F = mean g² + λ and I = −(g ⊙ F⁻¹)·ḡ.
    g = grads["loop"]
    _close(res["closed_form"].fisher, (g * g).mean(0) + 0.01)
    _close(res["closed_form"].influence, (-(g / ((g * g).mean(0) + 0.01)) @ g.mean(0)).float())
    w = {p: imu_sample_weights(model, data, method=p, top_fraction=0.5)[0] for p in PATHS}
    _close(w["closed_form"], w["loop"])
    _close(w["func"], w["loop"])


def test_weight_only_target_closed_form(cls_data: tuple[nn.Module, dict[str, torch.Tensor]]) -> None:
    model, data = cls_data
    a = per_sample_gradients(model, data, target=["head.weight"], method="closed_form")
    b = per_sample_gradients(model, data, target=["head.weight"], method="loop")
    assert a.shape == (40, 36)
    _close(a, b)


def test_closed_form_uses_one_forward_and_no_backward(
    cls_data: tuple[nn.Module, dict[str, torch.Tensor]],
) -> None:
    model, data = cls_data
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    grads_seen = []
    for p in model.parameters():
        p.register_hook(lambda g: grads_seen.append(1))
    res = influence_scores(model, data, method="closed_form", batch_size=256)
    assert res.path == "closed_form"
    assert len(calls) == 1  # one batched forward pass for all 40 samples
    assert grads_seen == []  # no autograd backward at all
    calls.clear()
    influence_scores(model, data, method="loop")
    assert len(calls) == 40  # the reference loop: one pass per sample


def test_conv_target_func_matches_loop() -> None:
    torch.manual_seed(1)
    model = CNN().double()
    with torch.no_grad():  # non-trivial BatchNorm statistics, used in eval mode by every path
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.train()
    data = {"inputs": torch.randn(12, 1, 6, 6, dtype=torch.float64), "labels": torch.randint(0, 5, (12,))}
    names = resolve_target(model, "conv.*")
    assert names == ["conv.weight", "conv.bias"]
    g_func = per_sample_gradients(model, data, target="conv.*", method="func", chunk_size=5)
    g_loop = per_sample_gradients(model, data, target="conv.*", method="loop")
    assert g_func.shape == (12, 3 * 9 + 3)
    _close(g_func, g_loop)
    r_auto = influence_scores(model, data, target="conv.*", method="auto")
    r_loop = influence_scores(model, data, target="conv.*", method="loop")
    assert r_auto.path == "func"
    _close(r_auto.influence, r_loop.influence)
    assert model.training  # mode restored


def test_causal_lm_head_three_paths() -> None:
    torch.manual_seed(2)
    model = TinyLM().double()
    ids = torch.randint(0, 13, (9, 7))
    mask = torch.ones(9, 7, dtype=torch.long)
    mask[:3, 5:] = 0  # right padding on three sequences
    data = {"input_ids": ids, "attention_mask": mask}
    grads = {p: per_sample_gradients(model, data, method=p) for p in PATHS}
    for p in ("closed_form", "func"):
        _close(grads[p], grads["loop"])
    res = {p: influence_scores(model, data, method=p) for p in PATHS}
    for p in ("closed_form", "func"):
        _close(res[p].influence, res["loop"].influence)
        _close(res[p].fisher, res["loop"].fisher)


def test_auto_falls_back_when_head_is_not_the_output(
    cls_data: tuple[nn.Module, dict[str, torch.Tensor]],
) -> None:
    model, data = cls_data

    class Scaled(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * self.inner(x)  # the head output is not the model output

    wrapped = Scaled(model)
    assert influence_scores(wrapped, data).path == "func"
    with pytest.raises(ParamsError, match="closed-form"):
        influence_scores(wrapped, data, method="closed_form")
    _close(
        influence_scores(wrapped, data).influence, influence_scores(wrapped, data, method="loop").influence
    )


def test_tied_head_is_not_closed_form() -> None:
    model = TinyLM(vocab=13, d=8).double()
    model.lm_head.weight = model.emb.weight  # tie, as many LMs do
    data = {"input_ids": torch.randint(0, 13, (4, 5))}
    res = influence_scores(model, data, target=["emb.weight"])
    assert res.path == "func"


def test_resolve_target() -> None:
    model = MLP()
    assert resolve_target(model, None) == ["head.weight", "head.bias"]
    assert resolve_target(model, "head") == ["head.weight", "head.bias"]
    assert resolve_target(model, r"body\.0\..*") == ["body.0.weight", "body.0.bias"]
    assert resolve_target(model, ["head.bias", "body.0.weight"]) == ["body.0.weight", "head.bias"]
    assert len(resolve_target(model, "all")) == 4
    with pytest.raises(ParamsError, match=r"body\.0\.weight"):  # names the available parameters
        resolve_target(model, "fc")


def test_selection_rules() -> None:
    infl = torch.tensor([0.5, -4.0, -1.0, 0.2, -9.0, -0.25, -16.0, -2.25, 3.0, -0.01])
    # 7 negative; top 50% of the negatives, truncated: int(3.5) = 3 → |I| = 16, 9, 4
    w, sel = select_weights(infl, top_fraction=0.5, clip_quantile=1.0)
    assert sel.tolist() == [6, 4, 1]
    assert torch.equal(w.nonzero().squeeze(1).sort().values, torch.tensor([1, 4, 6]))
    assert torch.allclose(w[[6, 4, 1]], torch.tensor([4.0, 3.0, 2.0]))
    assert bool((w[infl >= 0] == 0).all())
    # clipped from above at the quantile of the selected weights (linear interpolation)
    w, _ = select_weights(infl, top_fraction=0.5, clip_quantile=0.5)
    assert torch.allclose(w[[6, 4, 1]], torch.tensor([3.0, 3.0, 2.0]))
    w, sel = select_weights(infl, top_fraction=0.01)  # at least one sample
    assert sel.tolist() == [6]
    w, sel = select_weights(torch.tensor([1.0, 2.0]))  # nothing negative: nothing selected
    assert sel.numel() == 0 and float(w.sum()) == 0.0


def test_imu_weights_info(cls_data: tuple[nn.Module, dict[str, torch.Tensor]]) -> None:
    model, data = cls_data
    w, info = imu_sample_weights(model, data)
    res = influence_scores(model, data)
    n_neg = int((res.influence < 0).sum())
    assert info["n_negative"] == n_neg
    assert info["n_selected"] == max(int(n_neg * 0.1), 1) == int((w > 0).sum())
    assert info["influence_path"] == "closed_form"
    assert bool((res.influence[w > 0] < 0).all())
