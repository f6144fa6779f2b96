"""Holdout-anchored forgetting: the eval split, the objectives, the official recipe in train mode,
the per-example membership test, and per-sample gradients of a tied HF LM with an attention mask."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearning.gradients import per_sample_gradients
from unlearning.holdout import split_holdout
from unlearning.influence import imu_sample_weights
from unlearning.membership import lira_scores, lira_test, logit_confidence, tpr_at_fpr
from unlearning.methods import unlearn
from unlearning.methods.ascent.objective import (
    NPO,
    REF_LOSS_KEY,
    KLAnchor,
    LossMatching,
    ObjectiveData,
    quantiles_of_sorted,
)
from unlearning.methods.ascent.params import OBJECTIVE_DEFAULTS
from unlearning.training import train
from unlearning.verification import mia_auc_margin, mia_flags

# --- the eval split ------------------------------------------------------------------------------


def test_split_is_disjoint_seeded_and_stratified() -> None:
    labels = torch.arange(101) % 7
    data = {"inputs": torch.randn(101, 3), "labels": labels}
    s = split_holdout(data, seed=3)
    assert s is not None and s.stratified
    both = torch.cat([s.anchor, s.check])
    assert sorted(both.tolist()) == list(range(101))  # disjoint and complete
    for c in range(7):  # every class halved (an odd one gives its extra sample to either half)
        n_a, n_c = int((labels[s.anchor] == c).sum()), int((labels[s.check] == c).sum())
        assert abs(n_a - n_c) <= 1
    again, other = split_holdout(data, seed=3), split_holdout(data, seed=4)
    assert again is not None and other is not None
    assert torch.equal(again.anchor, s.anchor) and not torch.equal(other.anchor, s.anchor)
    lm = split_holdout({"input_ids": torch.zeros(9, 4, dtype=torch.long)}, seed=0)
    # round(9 · 0.5) = 4 (banker's rounding) to the anchor half, no stratification without labels
    assert lm is not None and not lm.stratified and (lm.anchor.numel(), lm.check.numel()) == (4, 5)
    assert split_holdout({"inputs": torch.zeros(1, 2), "labels": torch.zeros(1, dtype=torch.long)}, 0) is None
    d = s.to_dict()
    assert d["n_anchor"] == len(d["anchor_indices"]) and d["n_check"] == len(d["check_indices"])


# --- the objectives ------------------------------------------------------------------------------


def _data(n: int = 30, c: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randn(n, 5, generator=g), "labels": torch.randint(0, c, (n,), generator=g)}


def _prepared(objective: object, net: nn.Module, forget: dict, anchor: dict | None = None) -> dict:
    data = ObjectiveData(
        net=net,
        forget=forget,
        anchor=anchor,
        unseen=anchor,
        task="classification",
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    return objective.prepare(data)  # type: ignore[attr-defined, no-any-return]


def test_npo_is_ascent_that_fades_with_the_log_ratio() -> None:
    torch.manual_seed(0)
    net, forget = nn.Linear(5, 4), _data()
    npo = NPO(beta=2.0)
    extras = _prepared(npo, net, forget)
    batch = {**forget, **extras}
    w = torch.ones(30)
    # At θ = θ_ref: (2/β)·log 2 per sample, and its gradient is −∇ mean loss (plain ascent).
    value = npo(net, batch, w, "classification")
    assert float(value) == pytest.approx(2 / 2.0 * math.log(2), rel=1e-6)
    g_npo = torch.autograd.grad(value, net.weight)[0]
    ce = F.cross_entropy(net(forget["inputs"]), forget["labels"])
    g_ce = torch.autograd.grad(ce, net.weight)[0]
    assert torch.allclose(g_npo, -g_ce, atol=1e-6)
    # Once a sample's loss is far above the reference, its weight 2σ(β(ℓ_ref − ℓ)) is near 0.
    batch[REF_LOSS_KEY] = batch[REF_LOSS_KEY] - 20.0
    value = npo(net, batch, w, "classification")
    assert float(torch.autograd.grad(value, net.weight)[0].abs().max()) < 1e-12


def test_loss_matching_pulls_forget_losses_onto_the_unseen_quantiles() -> None:
    sorted_vals = torch.sort(torch.rand(50, dtype=torch.float64)).values
    q = torch.rand(17, dtype=torch.float64)
    assert torch.allclose(quantiles_of_sorted(sorted_vals, q), torch.quantile(sorted_vals, q))
    torch.manual_seed(0)
    net, forget, unseen = nn.Linear(5, 4), _data(seed=1), _data(40, seed=2)
    match = LossMatching()
    _prepared(match, net, forget, unseen)
    assert match.targets is not None and match.targets.numel() == 40
    # Targets equal to the current forget losses (sorted onto sorted) leave nothing to pull.
    with torch.no_grad():
        own = F.cross_entropy(net(forget["inputs"]), forget["labels"], reduction="none")
    match.targets = torch.sort(own).values
    assert float(match(net, forget, torch.ones(30), "classification")) < 1e-2
    # Higher targets: the gradient raises the forget losses (descent on the matching loss).
    match.targets = match.targets + 1.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = float(own.mean())
    for _ in range(20):
        opt.zero_grad()
        match(net, forget, torch.ones(30), "classification").backward()
        opt.step()
    with torch.no_grad():
        after = float(F.cross_entropy(net(forget["inputs"]), forget["labels"]))
    assert after > before + 0.5


def test_kl_anchor_is_zero_at_the_original_and_grows_when_it_moves() -> None:
    torch.manual_seed(0)
    net, anchor = nn.Linear(5, 4), _data(20)
    kl = KLAnchor(weight=3.0, batch_size=8)
    _prepared(kl, net, _data(), anchor)
    assert kl.teacher is not None and kl.teacher.shape == (20, 4)
    assert float(kl(net, {}, torch.ones(1), "classification")) == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        net.weight.add_(0.5)
    assert float(kl(net, {}, torch.ones(1), "classification")) > 0
    seen = torch.cat([kl._next_indices() for _ in range(5)])
    assert set(seen[:16].tolist()) <= set(range(20))  # cycles through shuffled anchor batches


def test_objective_defaults_resolve_by_objective() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    data, ev = _data(60), _data(80, seed=5)
    train(net, data, epochs=60, lr=1e-2, batch_size=16, device="cpu")
    forget = {k: v[:12] for k, v in data.items()}
    rep = unlearn("ga", net, forget, eval=ev, device="cpu").report
    assert (rep["objective"], rep["batch_size"]) == (
        "match",
        OBJECTIVE_DEFAULTS[("match", "classification")]["batch_size"],
    )
    assert rep["anchor_weight"] == OBJECTIVE_DEFAULTS[("match", "classification")]["anchor_weight"]
    assert rep["early_stop"] is None and rep["epochs_run"] == rep["params"]["max_epochs"]
    assert rep["after"]["forget_loss"] > rep["before"]["forget_loss"]
    npo = unlearn("npo", net, forget, eval=ev, device="cpu").report
    assert (npo["objective"], npo["batch_size"], npo["early_stop"]) == ("npo", 64, "eval_accuracy")
    # Without an eval set: nothing to anchor or stop on, a short fixed run.
    bare = unlearn("ga", net, forget, device="cpu").report
    assert "anchor" not in bare and bare["objective"] == "npo" and bare["epochs_run"] == 2
    with pytest.raises(Exception, match="match"):
        unlearn("ga", net, forget, {"objective": "match"}, device="cpu")


# --- the official recipe, train mode ------------------------------------------------------------


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _official_imu(model: nn.Module, forget: dict[str, torch.Tensor], seed: int) -> nn.Module:
    """The official IMU loop (Classification/unlearn/IMU.py, impl.py) written out independently:
    per-sample last-layer gradients in eval mode, F = mean g² + 0.01, I = −(g ⊙ F⁻¹)·ḡ (without the
    official code's in-place overwrite of sample 0's gradient), top 10% of the negative ones,
    sqrt weights clipped at their 0.93 quantile; then 10 epochs of SGD(0.01, 0.9, 5e-4) on fc in
    train mode, batch 256, L = −Σw·CE/Σw + 0.2‖fc‖₁, and the train-mode forward of the accuracy log."""
    x, y = forget["inputs"], forget["labels"]
    fc = [model.fc.weight, model.fc.bias]
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, fc)]))
    g = torch.stack(rows)
    fisher = (g * g).mean(0) + 0.01
    infl = -(g / fisher) @ g.mean(0)
    neg = torch.nonzero(infl < 0).squeeze(1)
    k = max(int(neg.numel() * 0.1), 1)
    sel = neg[torch.argsort(infl[neg].abs(), descending=True, stable=True)[:k]]
    w = infl[sel].abs().sqrt()
    w = w.clamp(max=torch.quantile(w, 0.93))
    opt = torch.optim.SGD(fc, lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    for p in model.body.parameters():
        p.requires_grad_(False)
    for _ in range(10):
        order = torch.randperm(sel.numel(), generator=gen)
        for start in range(0, sel.numel(), 256):
            b = order[start : start + 256]
            model.train()
            ce = F.cross_entropy(model(x[sel[b]]), y[sel[b]], reduction="none")
            loss = -(w[b] * ce).sum() / w[b].sum() + 0.2 * torch.cat([p.reshape(-1) for p in fc]).abs().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model(x[sel[b]])  # the accuracy log's forward, in train mode
    return model.eval()


def test_official_preset_reproduces_the_official_loop_with_batchnorm() -> None:
    import copy

    torch.manual_seed(0)
    model = BNNet()
    data = {"inputs": torch.randn(600, 6), "labels": torch.randint(0, 3, (600,))}
    train(model, data, epochs=5, lr=1e-2, batch_size=32, device="cpu")
    forget = {k: v[:400] for k, v in data.items()}
    res = unlearn("imu", model, forget, {"preset": "official"}, device="cpu", seed=7)
    assert res.report["params"]["bn_mode"] == "train" and not res.report["features_cached"]
    expected = _official_imu(copy.deepcopy(model), forget, seed=7)
    got, want = res.model.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for key in got:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-6, rtol=1e-5), key
    # The running statistics moved (train-mode forwards); eval mode leaves them alone.
    before = model.state_dict()["body.1.running_mean"]
    assert not torch.allclose(got["body.1.running_mean"], before)
    eval_mode = unlearn("imu", model, forget, {"preset": "official", "bn_mode": "eval"}, device="cpu", seed=7)
    assert torch.equal(eval_mode.model.state_dict()["body.1.running_mean"], before)


def test_official_weights_match_the_engine() -> None:
    torch.manual_seed(1)
    model = BNNet()
    data = {"inputs": torch.randn(200, 6), "labels": torch.randint(0, 3, (200,))}
    train(model, data, epochs=3, lr=1e-2, batch_size=32, device="cpu")
    model.eval()
    weights, info = imu_sample_weights(model, data, target=["fc.weight", "fc.bias"], method="loop")
    assert info["n_selected"] == max(int(info["n_negative"] * 0.1), 1)
    assert float(weights.max()) == pytest.approx(info["weight_max"])


# --- per-example membership ----------------------------------------------------------------------


def test_lira_scores_and_tpr() -> None:
    g = torch.Generator().manual_seed(0)
    k, n = 16, 400
    mu = torch.randn(n, generator=g, dtype=torch.float64) * 3  # samples differ in difficulty
    refs = mu + torch.randn(k, n, generator=g, dtype=torch.float64)
    unseen_like = mu + torch.randn(n, generator=g, dtype=torch.float64)
    exposed = mu + 2.5 + torch.randn(n, generator=g, dtype=torch.float64)
    scores, mode, fixed = lira_scores(unseen_like, refs)
    assert mode == "offline" and not fixed  # 16 OUT references: a variance per sample
    assert tpr_at_fpr(scores[:200], scores[200:], [0.05])[0.05] < 0.12
    scores, _, _ = lira_scores(torch.cat([exposed[:200], unseen_like[200:]]), refs)
    assert tpr_at_fpr(scores[:200], scores[200:], [0.05])[0.05] > 0.6
    # The per-example test sees what a population threshold on φ cannot: difficulty varies by ±3.
    raw = torch.cat([exposed[:200], unseen_like[200:]])
    assert tpr_at_fpr(raw[:200], raw[200:], [0.05])[0.05] < 0.4
    # Half in, half out: online.
    in_mask = torch.zeros(k, n, dtype=torch.bool)
    in_mask[: k // 2] = True
    refs_io = refs + 2.5 * in_mask
    _, mode, _ = lira_scores(unseen_like, refs_io, in_mask)
    assert mode == "online"
    thr = tpr_at_fpr(torch.tensor([0.0, 1.0, 2.0]), torch.arange(100.0), [0.05])
    assert thr[0.05] == 0.0


def test_lira_on_models() -> None:
    """A memorising model exposes its training samples; models trained without them do not."""
    torch.manual_seed(0)
    x, y = torch.randn(240, 10), torch.randint(0, 4, (240,))
    members = {"inputs": x[:40], "labels": y[:40]}
    pool = {"inputs": x[40:140], "labels": y[40:140]}
    nonmembers = {"inputs": x[140:], "labels": y[140:]}

    def fit(data: dict, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
        train(m, data, epochs=80, lr=1e-2, batch_size=32, seed=seed, device="cpu")
        return m

    both = {k: torch.cat([members[k], pool[k]]) for k in members}
    target = fit(both, 0)
    refs = [fit(pool, s) for s in range(1, 5)]
    res = lira_test(target, members, nonmembers, refs)
    assert res.mode == "offline" and res.n_references == 4 and res.fixed_variance
    assert res.tpr_at_fpr[0.05] > 0.3 and res.auc > 0.7
    clean = lira_test(fit(pool, 9), members, nonmembers, refs)
    assert clean.tpr_at_fpr[0.05] < 0.2
    phi = logit_confidence(target, members)
    p = torch.softmax(target(members["inputs"]).double(), -1).gather(1, members["labels"][:, None])[:, 0]
    assert torch.allclose(phi, torch.log(p / (1 - p)), atol=1e-6)
    assert set(res.to_dict()["tpr_at_fpr"]) == {"0.01", "0.05"}


def test_two_sided_mia_flags() -> None:
    assert mia_auc_margin(1000, 1000) == 0.05 and mia_auc_margin(10, 10) > 0.2
    assert mia_flags(0.3, 200, 200) == ["mia_over_forgetting"]
    assert mia_flags(0.7, 200, 200) == ["mia_exposed"]
    assert mia_flags(0.47, 200, 200) == [] and mia_flags(0.3, 5, 5) == []


def test_class_scope_reports_over_forgetting_against_its_own_class() -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train(net, {"inputs": x[:1200], "labels": y[:1200]}, epochs=20, lr=1e-2, batch_size=64, device="cpu")
    forget = {"inputs": x[:1200][y[:1200] == 0], "labels": y[:1200][y[:1200] == 0]}
    ev = {"inputs": x[1200:], "labels": y[1200:]}
    rep = unlearn("ga", net, forget, {"scope": "class"}, eval=ev, device="cpu").report
    # Forgotten-class samples vs the class's own unseen samples: both now unrecognised, no flag,
    # although against the other classes' eval samples the AUC is far below 0.5.
    assert rep["after"]["forget_accuracy"] == 0.0 and rep["after"]["mia_auc"] < 0.3
    assert "mia_over_forgetting" not in rep.flags


# --- a tied HF causal LM with an attention mask ---------------------------------------------------


def _tiny_gpt2() -> nn.Module:
    pytest.importorskip("transformers")
    from unlearning import build_model

    torch.manual_seed(0)
    config = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 32}
    return build_model(
        {
            "name": "hf-causal-lm",
            "config": {"hf_config": {**config, "n_positions": 16, "tie_word_embeddings": True}},
        }
    )


def _masked_ids(n: int = 6, t: int = 10) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 32, (n, t), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1::2, 7:] = 0  # two lengths: right padding on every other sequence
    return {"input_ids": ids, "attention_mask": mask}


def test_tied_embeddings_with_attention_mask_per_sample_gradients() -> None:
    model = _tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    data = _masked_ids()
    target = ["transformer.wte.weight"]
    func = per_sample_gradients(model, data, target=target, method="func")
    loop = per_sample_gradients(model, data, target=target, method="loop")
    assert torch.allclose(func, loop, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("params", [{"preset": "official", "epochs": 1}, {"preset": "adaptive", "epochs": 1}])
def test_imu_runs_on_a_tied_hf_lm_with_attention_mask(params: dict) -> None:
    model = _tiny_gpt2()
    data = _masked_ids()
    res = unlearn("imu", model, data, params, device="cpu")
    assert res.report["influence_path"] == "func"  # tied head: no closed form
    assert res.report["steps"] >= 1
    changed = {
        n
        for n, p in res.model.named_parameters()
        if not torch.equal(p.detach(), dict(model.named_parameters())[n].detach())
    }
    assert changed == {"transformer.wte.weight"}  # the head is the embedding matrix


def test_loss_matching_takes_no_step_when_the_forget_set_already_looks_unseen() -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train(net, {"inputs": x[:1000], "labels": y[:1000]}, epochs=10, lr=1e-2, batch_size=64, device="cpu")
    # Samples the model never trained on: a retrained model would see them exactly as it does.
    forget = {"inputs": x[1000:1150], "labels": y[1000:1150]}
    ev = {"inputs": x[1150:], "labels": y[1150:]}
    res = unlearn("ga", net, forget, eval=ev, device="cpu")
    rep = res.report
    assert (rep["objective"], rep["stop_reason"], rep["steps"]) == ("match", "already_unseen", 0)
    assert rep["stopped_early"] and abs(rep["last_check"]["mia_auc"] - 0.5) < 0.1
    before, after = net.state_dict(), res.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
