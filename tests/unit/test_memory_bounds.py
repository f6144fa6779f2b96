"""Memory bounds for real language models: forward batches follow a logits budget, torch.func chunks
follow a per-sample-gradient budget, and nothing changes the numbers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import unlearning.budgets as budgets
import unlearning.gradients.func as func_gradients
from tests.unit.test_influence import TinyLM
from unlearning.budgets import MAX_LOGIT_ELEMENTS, batch_size_for, output_size
from unlearning.data import validate_dataset
from unlearning.errors import DataError, ParamsError
from unlearning.gradients import func_chunk_size
from unlearning.influence import influence_scores, per_sample_gradients
from unlearning.targets import resolve_target, target_params
from unlearning.verification import measure, per_sample_metrics

GPT2_VOCAB, GPT2_D = 50257, 768


class TiedHeadLM(nn.Module):
    """GPT-2's layout in miniature: the LM head shares the token embedding matrix."""

    def __init__(self, vocab: int, d: int, device: str | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, device=device)
        self.head = nn.Linear(d, vocab, bias=False, device=device)
        self.head.weight = self.emb.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(input_ids).cumsum(1)))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    assert float((a - b).abs().max() / scale) < rtol


def _lm_data(n: int = 10, t: int = 6, vocab: int = 13, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[: n // 3, t - 2 :] = 0
    return {"input_ids": torch.randint(0, vocab, (n, t), generator=g), "attention_mask": mask}


def _record_batches(model: nn.Module) -> list[int]:
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    return sizes


# --- 1. forward batches over a data set follow the logits budget -------------------------------


def test_lm_batch_size_for_a_real_vocabulary_is_small() -> None:
    data = {"input_ids": torch.zeros(4096, 128, dtype=torch.long)}
    b = batch_size_for(data, 1024, GPT2_VOCAB)
    assert b == MAX_LOGIT_ELEMENTS // (128 * GPT2_VOCAB) == 20
    assert b * 128 * GPT2_VOCAB <= MAX_LOGIT_ELEMENTS
    # Never below one sample, never above the request, unknown output size leaves it alone.
    assert batch_size_for({"input_ids": torch.zeros(2, 8192, dtype=torch.long)}, 1024, GPT2_VOCAB) == 1
    assert batch_size_for({"input_ids": torch.zeros(2, 4, dtype=torch.long)}, 16, 13) == 16
    assert batch_size_for(data, 1024, None) == 1024


def test_classification_batches_are_unaffected() -> None:
    data = {"inputs": torch.zeros(5, 3, 32, 32), "labels": torch.zeros(5, dtype=torch.long)}
    for classes in (2, 10, 100, 1000):
        assert batch_size_for(data, 1024, classes) == 1024
    # Token classification ("inputs" [N, T]) produces [B, C] logits, not [B, T, C].
    tokens = {"inputs": torch.zeros(5, 512, dtype=torch.long), "labels": torch.zeros(5, dtype=torch.long)}
    assert batch_size_for(tokens, 1024, 10) == 1024


def test_output_size_reads_the_head() -> None:
    assert output_size(TinyLM(vocab=13)) == 13  # last nn.Linear
    assert output_size(TiedHeadLM(17, 4)) == 17  # the `head` attribute the architectures attach
    assert output_size(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))) == 4

    class EmbeddingHead(nn.Module):  # logits from the embedding matrix, no nn.Linear at all
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(21, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids) @ self.emb.weight.T

    assert output_size(EmbeddingHead()) == 21


def test_gpt2_size_model_gets_small_batches_and_chunks() -> None:
    # On the meta device: the sizes are real, no memory is allocated.
    model = TiedHeadLM(GPT2_VOCAB, GPT2_D, device="meta")
    data = {"input_ids": torch.zeros(64, 128, dtype=torch.long)}
    assert output_size(model) == GPT2_VOCAB
    assert batch_size_for(data, 1024, output_size(model)) == 20
    names = resolve_target(model, None)
    p = sum(t.numel() for t in target_params(model, names))
    assert p == GPT2_VOCAB * GPT2_D
    chunk = func_chunk_size(model, data, names, 64)
    assert chunk == 1  # 64 rows of 38.6M elements would be ~10 GB in float32
    assert chunk * p <= max(p, budgets.MAX_CHUNK_ELEMENTS)


def test_per_sample_metrics_batches_follow_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = TinyLM().double()
    data = _lm_data(n=10, t=6)
    sizes = _record_batches(model)
    ref = per_sample_metrics(model, data)
    assert sizes == [10]
    sizes.clear()
    monkeypatch.setattr(budgets, "MAX_LOGIT_ELEMENTS", 3 * 6 * 13)  # three sequences' logits
    got = per_sample_metrics(model, data)
    assert sizes == [3, 3, 3, 1]
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    sizes.clear()
    m = measure(model, data, _lm_data(n=4, t=6, seed=1))
    assert sizes == [3, 3, 3, 1, 3, 1]
    assert m["forget_loss"] == pytest.approx(float(ref[0].double().mean()), rel=1e-12)


def test_closed_form_influence_batches_follow_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    model = TinyLM().double()
    data = _lm_data(n=10, t=6)
    ref = influence_scores(model, data, method="closed_form")
    sizes = _record_batches(model)
    monkeypatch.setattr(budgets, "MAX_LOGIT_ELEMENTS", 4 * 6 * 13)
    got = influence_scores(model, data, method="closed_form")
    assert got.path == "closed_form"
    assert sizes == [4, 4, 2] * 2  # two passes (Fisher, then influence), each in budgeted batches
    _close(got.influence, ref.influence)
    _close(got.fisher, ref.fisher)
    _close(got.mean_grad, ref.mean_grad)


# --- 2. torch.func chunks follow the per-sample-gradient budget --------------------------------


def test_func_chunk_is_bounded_by_parameter_count(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    model = TiedHeadLM(13, 8).double()
    data = _lm_data(n=9, t=5)
    data.pop("attention_mask")
    names = resolve_target(model, None)
    p = 13 * 8
    assert func_chunk_size(model, data, names, 64) == 64
    ref_g = per_sample_gradients(model, data, method="func", chunk_size=64)
    ref = influence_scores(model, data, chunk_size=64)
    assert ref.path == "func"  # tied head: no closed form
    monkeypatch.setattr(budgets, "MAX_CHUNK_ELEMENTS", 2 * p + 1)
    assert func_chunk_size(model, data, names, 64) == 2
    assert func_chunk_size(model, data, names, 1) == 1  # chunk_size stays an upper bound
    seen: list[int] = []
    real = func_gradients.iterate_batches

    def spy(data: Any, batch_size: int, *args: Any, **kwargs: Any) -> Any:
        seen.append(batch_size)
        return real(data, batch_size, *args, **kwargs)

    monkeypatch.setattr(func_gradients, "iterate_batches", spy)
    got_g = per_sample_gradients(model, data, method="func", chunk_size=64)
    assert seen == [2]
    _close(got_g, ref_g)
    got = influence_scores(model, data, chunk_size=64)
    _close(got.influence, ref.influence)
    _close(got.fisher, ref.fisher)
    with pytest.raises(ParamsError, match="chunk_size"):
        func_chunk_size(model, data, names, 0)


def test_func_chunk_is_bounded_by_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    model = TinyLM().double()
    data = _lm_data(n=9, t=6)
    names = resolve_target(model, "mix.*")  # a small target: only the logits can bound the chunk
    assert func_chunk_size(model, data, names, 64) == 64
    monkeypatch.setattr(budgets, "MAX_LOGIT_ELEMENTS", 3 * 6 * 13)
    assert func_chunk_size(model, data, names, 64) == 3


# --- 3. per_sample_gradients(method="auto") falls back to torch.func ---------------------------


def test_per_sample_gradients_auto_falls_back() -> None:
    torch.manual_seed(3)
    model = TiedHeadLM(13, 8).double()
    data = {"input_ids": torch.randint(0, 13, (5, 4))}
    auto = per_sample_gradients(model, data, method="auto")
    loop = per_sample_gradients(model, data, method="loop")
    assert auto.shape == (5, 13 * 8)
    _close(auto, loop, rtol=1e-7)
    with pytest.raises(ParamsError, match="closed-form"):
        per_sample_gradients(model, data, method="closed_form")
    # Where the closed form applies, auto still takes it (and agrees with the loop).
    lm = TinyLM().double()
    _close(per_sample_gradients(lm, data, method="auto"), per_sample_gradients(lm, data, method="loop"), 1e-7)


# --- 4. a causal-LM mask must leave something to predict ---------------------------------------

LM_SPEC = {
    "name": "tiny-transformer",
    "config": {"vocab_size": 20, "max_len": 6, "d_model": 8, "n_layers": 1, "n_heads": 2},
}


def test_causal_lm_mask_without_an_adjacent_pair_is_rejected() -> None:
    ids = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]]
    with pytest.raises(DataError, match=r"sample 1 has no two adjacent attended tokens"):
        validate_dataset(
            {"input_ids": ids, "attention_mask": [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0]]}, LM_SPEC
        )
    with pytest.raises(DataError, match=r"sample 0 .*\(2 sample\(s\) like this\)"):
        validate_dataset(
            {"input_ids": ids, "attention_mask": [[0, 1, 0, 1], [1, 0, 1, 0], [1, 1, 1, 1]]}, LM_SPEC
        )
    # One adjacent attended pair anywhere is enough (left padding, right padding, gaps).
    out = validate_dataset(
        {"input_ids": ids, "attention_mask": [[0, 0, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1]]}, LM_SPEC
    )
    assert out["attention_mask"].shape == (3, 4)


def test_token_classification_mask_needs_no_pair() -> None:
    pytest.importorskip("transformers")
    spec = {
        "name": "hf-sequence-classification",
        "config": {
            "hf_config": {
                "model_type": "gpt2",
                "n_layer": 1,
                "n_embd": 16,
                "n_head": 2,
                "vocab_size": 50,
                "n_positions": 32,
                "num_labels": 3,
                "pad_token_id": 0,
            }
        },
    }
    out = validate_dataset({"input_ids": [[4, 5, 6]], "labels": [2], "attention_mask": [[1, 0, 1]]}, spec)
    assert out["attention_mask"].tolist() == [[1, 0, 1]]


# --- a Hugging Face causal LM end to end --------------------------------------------------------


def test_hf_gpt2_batches_and_chunks_follow_the_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from unlearning.architectures import build_model

    gpt2 = {
        "model_type": "gpt2",
        "n_layer": 1,
        "n_embd": 16,
        "n_head": 2,
        "vocab_size": 50,
        "n_positions": 32,
    }
    torch.manual_seed(4)
    model = build_model(
        {"name": "hf-causal-lm", "config": {"hf_config": {**gpt2, "bos_token_id": 0, "eos_token_id": 0}}}
    )
    model = model.double()
    assert output_size(model) == 50
    data = {"input_ids": torch.randint(0, 50, (6, 8))}
    ref_m = per_sample_metrics(model, data)
    ref_i = influence_scores(model, data)  # tied head → torch.func
    assert ref_i.path == "func"
    sizes = _record_batches(model)
    monkeypatch.setattr(budgets, "MAX_LOGIT_ELEMENTS", 4 * 8 * 50)
    monkeypatch.setattr(budgets, "MAX_CHUNK_ELEMENTS", 50 * 16)  # one row of the tied head
    got_m = per_sample_metrics(model, data)
    assert sizes == [4, 2]
    torch.testing.assert_close(got_m[0], ref_m[0], rtol=1e-10, atol=1e-12)
    assert torch.equal(got_m[1], ref_m[1])
    got_i = influence_scores(model, data)
    _close(got_i.influence, ref_i.influence, rtol=1e-7)
    _close(got_i.fisher, ref_i.fisher, rtol=1e-7)
