"""Offline data sets: shapes, determinism, stratification, Markov sampling, forget splits."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from unlearning import builtin_data
from unlearning.errors import DataError


def test_digits_shapes_scale_and_stratified_split() -> None:
    d = builtin_data.digits(0)
    tr, te = d["train"], d["test"]
    assert tr["inputs"].shape[1] == 64 and tr["inputs"].dtype == torch.float32
    assert tr["labels"].dtype == torch.int64
    assert float(tr["inputs"].min()) >= 0.0 and float(tr["inputs"].max()) <= 1.0
    assert tr["inputs"].shape[0] + te["inputs"].shape[0] == 1797
    # Every class keeps ~20% of its samples in the test split.
    frac = (
        te["labels"].bincount(minlength=10).double()
        / (te["labels"].bincount(minlength=10) + tr["labels"].bincount(minlength=10)).double()
    )
    assert torch.allclose(frac, torch.full((10,), 0.2, dtype=torch.float64), atol=0.01)
    img = builtin_data.digits(0, as_images=True)["train"]["inputs"]
    assert img.shape[1:] == (1, 8, 8)
    assert torch.equal(img.flatten(1), tr["inputs"])


def test_digits_deterministic_by_seed() -> None:
    a, b, c = builtin_data.digits(3), builtin_data.digits(3), builtin_data.digits(4)
    assert torch.equal(a["train"]["labels"], b["train"]["labels"])
    assert not torch.equal(a["train"]["labels"], c["train"]["labels"])


def test_mnist1d_local_generator_restores_global_rngs() -> None:
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = builtin_data.mnist1d(1, num_samples=200)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert d["train"]["inputs"].shape == (160, 40) and d["test"]["inputs"].shape == (40, 40)
    again = builtin_data.mnist1d(1, num_samples=200)
    assert torch.equal(d["train"]["inputs"], again["train"]["inputs"])
    assert builtin_data.mnist1d(1, num_samples=200, as_images=True)["train"]["inputs"].shape == (160, 1, 40)


def test_markov_chains_follow_their_transition_matrices() -> None:
    d = builtin_data.markov_chains(0, n_chains=3, vocab_size=10, seq_len=12, n_per_chain=50)
    trans = d["transitions"]
    assert trans.shape == (3, 10, 10)
    assert torch.allclose(trans.sum(-1), torch.ones(3, 10))
    ids, chain = d["train"]["input_ids"], d["chain"]
    assert ids.dtype == torch.int64 and ids.shape[1] == 12 and chain.shape[0] == ids.shape[0]
    # Every observed transition has positive probability under the sequence's own chain.
    p = trans[chain.unsqueeze(1), ids[:, :-1], ids[:, 1:]]
    assert bool((p > 1e-5).all())
    assert d["train_chain"].bincount().tolist() == [40, 40, 40]
    assert d["test_chain"].bincount().tolist() == [10, 10, 10]


def test_forget_split_random_class_and_chain() -> None:
    d = builtin_data.digits(0)
    n = d["train"]["labels"].shape[0]
    forget, retain = builtin_data.forget_split(d, "random", fraction=0.1, seed=0)
    assert forget["labels"].shape[0] == round(0.1 * n)
    assert forget["labels"].shape[0] + retain["labels"].shape[0] == n
    forget, retain = builtin_data.forget_split(d, "class", cls=3)
    assert bool((forget["labels"] == 3).all()) and not bool((retain["labels"] == 3).any())
    m = builtin_data.markov_chains(0, n_chains=2, n_per_chain=20)
    forget, retain = builtin_data.forget_split(m, "class", cls=1)
    assert forget["input_ids"].shape[0] == int((m["chain"] == 1).sum())
    with pytest.raises(DataError):
        builtin_data.forget_split(d, "class", cls=42)
    with pytest.raises(DataError):
        builtin_data.load_builtin("imagenet")
