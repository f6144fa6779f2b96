"""The anchored default on a causal LM: NPO's fixed epochs under the utility guard, and a KL anchor
widened by noised copies of the held-out sequences (``resample.py``)."""

from __future__ import annotations

import pytest
import torch

from unlearning import build_model, builtin_data, unlearn
from unlearning.losses import logits
from unlearning.methods.ascent.params import OBJECTIVE_DEFAULTS
from unlearning.methods.ascent.resample import RESAMPLE_RATE, resampled_copies
from unlearning.training import train

LM_DEFAULTS = OBJECTIVE_DEFAULTS[("npo", "causal-lm")]


def _lm(vocab: int = 11, length: int = 12) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"vocab_size": vocab, "max_len": length, "d_model": 16, "n_layers": 1, "n_heads": 2}
    return build_model({"name": "tiny-transformer", "config": config}).eval()


@pytest.fixture(scope="module")
def markov() -> dict[str, object]:
    """A tiny Markov-chain LM trained on 3 chains; chain 0 is the source to delete."""
    ds = builtin_data.markov_chains(0, n_chains=3, vocab_size=8, seq_len=10, n_per_chain=40)
    model = _lm(vocab=8, length=10)
    train(model, ds["train"], epochs=15, lr=3e-3, batch_size=32, seed=0, device="cpu")
    forget, _ = builtin_data.forget_split(ds, "class", cls=0)
    kept = ds["test_chain"] != 0
    return {"model": model.eval(), "forget": forget, "eval": {"input_ids": ds["test"]["input_ids"][kept]}}


def test_copies_redraw_a_share_of_the_real_tokens_from_the_model() -> None:
    net = _lm()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (40, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 8:] = 0  # right padding on half of the sequences
    anchor = {"input_ids": ids, "attention_mask": mask}
    out = resampled_copies(net, anchor, 3, torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == (120, 12) and out["input_ids"].dtype == ids.dtype
    # Copy-major order; the other keys repeat as they are.
    assert torch.equal(out["attention_mask"], mask.repeat(3, 1))
    copies = out["input_ids"].view(3, 40, 12)
    changed = copies != ids.unsqueeze(0)
    assert not changed[:, :, 0].any()  # the first token is context, never redrawn
    assert not (changed & ~mask.bool().unsqueeze(0)).any()  # padding stays as it is
    # Redrawn at about the rate (a draw may equal the original token, so a little below it).
    real = mask[:, 1:].bool().unsqueeze(0).expand(3, -1, -1)
    share = changed[:, :, 1:][real].float().mean().item()
    assert 0.5 * RESAMPLE_RATE < share <= RESAMPLE_RATE + 0.1
    # Reproducible from the generator's seed; another seed gives other copies.
    again = resampled_copies(net, anchor, 3, torch.Generator().manual_seed(1))
    other = resampled_copies(net, anchor, 3, torch.Generator().manual_seed(2))
    assert torch.equal(again["input_ids"], out["input_ids"])
    assert not torch.equal(other["input_ids"], out["input_ids"])


class Sure(torch.nn.Module):
    """Next-token logits that put all the mass on token 2, whatever the context."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(*input_ids.shape, 5)
        z[..., 2] = 30.0
        return z


def test_copies_follow_the_model_not_noise() -> None:
    """A model sure of one next token makes every redrawn token that token."""
    net = Sure()
    ids = torch.zeros(50, 6, dtype=torch.long)
    out = resampled_copies(net, {"input_ids": ids}, 2, torch.Generator().manual_seed(0), rate=1.0)
    assert (out["input_ids"][:, 1:] == 2).all() and (out["input_ids"][:, 0] == 0).all()
    assert float(logits(net, {"input_ids": ids}).softmax(-1)[0, 0, 2]) > 0.99


def test_no_copies_asked_or_possible() -> None:
    net = _lm()
    anchor = {"input_ids": torch.randint(0, 11, (4, 12))}
    assert resampled_copies(net, anchor, 0, torch.Generator())["input_ids"].shape == (0, 12)
    short = {"input_ids": torch.randint(0, 11, (4, 1))}
    assert resampled_copies(net, short, 2, torch.Generator())["input_ids"].shape == (0, 1)


def test_lm_default_runs_fixed_epochs_under_the_guard_with_copies(markov: dict) -> None:
    res = unlearn("ga", markov["model"], markov["forget"], eval=markov["eval"], device="cpu", seed=0)
    rep = res.report
    # No stopping rule: the fixed epochs of OBJECTIVE_DEFAULTS, one guard check before and after each.
    assert rep["objective"] == "npo" and rep["early_stop"] is None
    assert rep["epochs_run"] == LM_DEFAULTS["epochs"] and rep.get("stop_reason") is None
    assert rep["checks"] == LM_DEFAULTS["epochs"] + 1
    assert set(rep["last_check"]) == {"eval_accuracy", "eval_loss"}  # the guard reads utility only
    assert rep["anchor_copies"] == LM_DEFAULTS["anchor_copies"]
    assert rep["n_anchor"] > 0
    forget_rise = rep["after"]["forget_loss"] - rep["before"]["forget_loss"]
    assert forget_rise > 0.1 and forget_rise > rep["after"]["eval_loss"] - rep["before"]["eval_loss"]


def test_lm_guard_trips_in_a_fixed_epoch_run(markov: dict) -> None:
    params = {"lr": 0.05, "max_eval_drop": 0.0, "step_schedule": "constant", "anchor_copies": 0}
    rep = unlearn("ga", markov["model"], markov["forget"], params, eval=markov["eval"], device="cpu").report
    assert rep["stop_reason"] == "max_eval_drop" and rep["stopped_early"]
    assert rep["epochs_run"] < LM_DEFAULTS["epochs"]
    assert rep["rejected_check"]["eval_accuracy"] < rep["last_check"]["eval_accuracy"]


def test_lm_accuracy_stop_on_request(markov: dict) -> None:
    """The rule the default leaves out stops at once on a deleted source: the original's forget
    accuracy is already near its held-out accuracy on the kept chains."""
    params = {"early_stop": "eval_accuracy", "max_epochs": 50}
    rep = unlearn("ga", markov["model"], markov["forget"], params, eval=markov["eval"], device="cpu").report
    assert rep["early_stop"] == "eval_accuracy" and rep["epochs_run"] < LM_DEFAULTS["epochs"]


def test_classifier_anchor_never_copies() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    data = {"inputs": torch.randn(60, 5), "labels": torch.randint(0, 3, (60,))}
    ev = {"inputs": torch.randn(40, 5), "labels": torch.randint(0, 3, (40,))}
    rep = unlearn("npo", net, {k: v[:10] for k, v in data.items()}, {"anchor_copies": 4}, eval=ev).report
    assert rep["anchor_copies"] == 0
