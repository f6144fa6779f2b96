"""Offline data sets for the CLI quick start, the benchmarks and the tests.

Everything here is generated or loaded locally (scikit-learn's bundled digits, the MNIST-1D
generator, code-generated Markov chains): nothing is downloaded and nothing is written outside
a temporary directory. Every function is deterministic in its ``seed``.

A split is a plain dict of tensors in the engine's data format: ``{"inputs", "labels"}`` for
classification and ``{"input_ids"}`` for the causal-LM task.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal, cast

import numpy as np
import torch

from unlearning.errors import DataError
from unlearning.samples import take

Split = dict[str, torch.Tensor]

__all__ = [
    "BUILTIN_DATASETS",
    "digits",
    "forget_split",
    "list_builtin",
    "load_builtin",
    "markov_chains",
    "mnist1d",
    "stratified_split",
]


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) with each class split in the same proportion.

    Per class, a seeded permutation puts ``round(test_fraction * n_c)`` samples into the test set,
    so class balance is kept even for small sets (the digits have ~180 samples a class).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    g = _generator(seed)
    train_idx: list[torch.Tensor] = []
    test_idx: list[torch.Tensor] = []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls, as_tuple=False).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_test = round(test_fraction * idx.numel())
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    # Shuffle so classes do not come in blocks (a split's order should not leak its structure).
    train = torch.cat(train_idx)
    test = torch.cat(test_idx)
    train = train[torch.randperm(train.numel(), generator=g)]
    test = test[torch.randperm(test.numel(), generator=g)]
    return train, test


def digits(seed: int = 0, *, test_fraction: float = 0.2, as_images: bool = False) -> dict[str, Split]:
    """scikit-learn's 8×8 handwritten digits (1797 samples, bundled with sklearn, no download).

    Inputs are scaled to [0, 1]; shape [N, 64], or [N, 1, 8, 8] with ``as_images`` (for LeNet).
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.as_tensor(raw.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(raw.target, dtype=torch.int64)
    if as_images:
        x = x.reshape(-1, 1, 8, 8)
    tr, te = stratified_split(y, test_fraction, seed)
    full = {"inputs": x, "labels": y}
    return {"train": take(full, tr), "test": take(full, te)}


def mnist1d(
    seed: int = 0,
    *,
    num_samples: int = 5000,
    train_split: float = 0.8,
    as_images: bool = False,
) -> dict[str, Split]:
    """MNIST-1D (Greydanus 2020): 10 classes of 40-step 1-D signals, from the package's own generator.

    Uses ``mnist1d.data.make_dataset`` with its default transformation arguments and a local seed;
    ``get_dataset`` is avoided on purpose because it downloads and pickles to the working directory.
    The generator seeds numpy's and Python's global RNGs, so their states are restored afterwards.
    Inputs are float [N, 40] (or [N, 1, 40] with ``as_images``).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    if num_samples < 20:
        raise DataError(f"num_samples must be at least 20, got {num_samples}")
    args = get_dataset_args(as_dict=False)
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    args.seed = int(seed)
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        if as_images:
            xt = xt.unsqueeze(1)
        return {"inputs": xt, "labels": torch.as_tensor(y, dtype=torch.int64)}

    return {"train": split(raw["x"], raw["y"]), "test": split(raw["x_test"], raw["y_test"])}


def random_transitions(
    n_chains: int, vocab_size: int, *, support: int | None = None, concentration: float = 0.5, seed: int = 0
) -> torch.Tensor:
    """Random sparse-ish row-stochastic matrices [n_chains, V, V].

    Each row puts Dirichlet(``concentration``) mass on ``support`` randomly chosen next tokens
    (default max(2, V // 4)) and zero elsewhere, so chains differ clearly and a model that has
    learnt one chain assigns low probability to transitions that only another chain uses.
    """
    if n_chains < 1 or vocab_size < 2:
        raise DataError("need at least one chain and a vocabulary of two tokens")
    k = support if support is not None else max(2, vocab_size // 4)
    k = min(max(k, 1), vocab_size)
    # numpy's Generator gives seeded Dirichlet draws (torch.distributions takes no generator).
    rng = np.random.default_rng(int(seed))
    # Random support per row: the k smallest of uniform noise give a uniform random k-subset.
    support_idx = torch.as_tensor(rng.random((n_chains, vocab_size, vocab_size)).argsort(axis=-1)[..., :k])
    w = torch.as_tensor(
        rng.dirichlet(np.full(k, concentration), size=(n_chains, vocab_size)), dtype=torch.float32
    )
    trans = torch.zeros(n_chains, vocab_size, vocab_size)
    trans.scatter_(-1, support_idx, w + 1e-6)
    return trans / trans.sum(-1, keepdim=True)


def sample_chains(
    transitions: torch.Tensor, chain: torch.Tensor, seq_len: int, generator: torch.Generator
) -> torch.Tensor:
    """Sample one sequence per entry of ``chain`` (int64 [N]) from its chain; returns int64 [N, seq_len].

    Vectorised over the batch: one ``torch.multinomial`` per position over the [N, V] rows of the
    current tokens' transition distributions. The first token is uniform over the vocabulary.
    """
    n = chain.numel()
    v = transitions.shape[-1]
    out = torch.empty(n, seq_len, dtype=torch.int64)
    out[:, 0] = torch.randint(0, v, (n,), generator=generator)
    for t in range(1, seq_len):
        probs = transitions[chain, out[:, t - 1]]
        out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return out


def markov_chains(
    seed: int = 0,
    *,
    n_chains: int = 4,
    vocab_size: int = 16,
    seq_len: int = 24,
    n_per_chain: int = 200,
    test_fraction: float = 0.2,
    support: int | None = None,
) -> dict[str, Any]:
    """The IMU paper's synthetic language task: sequences from several random Markov chains.

    Returns ``{"train": {"input_ids"}, "test": {"input_ids"}, "transitions": [n_chains, V, V],
    "chain": chain id of each train sequence [N_train], "train_chain", "test_chain"}``.
    Forgetting a chain = forgetting every training sequence with that chain id
    (``forget_split(data, kind="class", cls=c)``).
    """
    if seq_len < 2 or n_per_chain < 2:
        raise DataError("seq_len and n_per_chain must be at least 2")
    trans = random_transitions(n_chains, vocab_size, support=support, seed=seed)
    g = _generator(seed + 7919)
    chain = torch.arange(n_chains).repeat_interleave(n_per_chain)
    ids = sample_chains(trans, chain, seq_len, g)
    tr, te = stratified_split(chain, test_fraction, seed)
    return {
        "train": {"input_ids": ids[tr]},
        "test": {"input_ids": ids[te]},
        "transitions": trans,
        "chain": chain[tr],
        "train_chain": chain[tr],
        "test_chain": chain[te],
    }


def forget_split(
    data: dict[str, Any] | Split,
    kind: Literal["random", "class"] = "random",
    *,
    fraction: float = 0.1,
    cls: int = 0,
    seed: int = 0,
    groups: torch.Tensor | None = None,
) -> tuple[Split, Split]:
    """Split a training set into (forget, retain).

    ``data`` is either a split ({"inputs","labels"} / {"input_ids"}) or a full data set dict from this
    module (its "train" split is used, and for Markov chains its "chain" ids as ``groups``).
    ``kind="random"``: a seeded random ``fraction`` of the samples; ``kind="class"``: every sample of
    class (or chain) ``cls``.
    """
    if "train" in data:
        full = cast(dict[str, Any], data)  # a data set dict of this module: its values are splits
        split: Split = full["train"]
        if groups is None and "chain" in full:
            groups = full["chain"]
    else:
        split = cast(Split, data)
    n = next(iter(split.values())).shape[0]
    if kind == "random":
        if not 0.0 < fraction < 1.0:
            raise DataError(f"fraction must lie in (0, 1), got {fraction}")
        perm = torch.randperm(n, generator=_generator(seed))
        n_forget = max(1, round(fraction * n))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[perm[:n_forget]] = True
    elif kind == "class":
        ids = groups if groups is not None else split.get("labels")
        if ids is None:
            raise DataError("class forgetting needs labels or group ids")
        mask = ids == int(cls)
        if not bool(mask.any()) or bool(mask.all()):
            raise DataError(f"class {cls} leaves an empty forget or retain set")
    else:
        raise DataError(f"unknown forget split kind {kind!r}; use 'random' or 'class'")
    return take(split, mask), take(split, ~mask)


# Registry used by the CLI: name -> (seed -> data set dict), plus the matching default architecture.
BUILTIN_DATASETS: dict[str, Callable[..., dict[str, Any]]] = {
    "digits": digits,
    "digits-images": lambda seed=0, **kw: digits(seed, as_images=True, **kw),
    "mnist1d": mnist1d,
    "markov": markov_chains,
}


def list_builtin() -> list[str]:
    return sorted(BUILTIN_DATASETS)


def load_builtin(name: str, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Load a built-in data set by name (see ``list_builtin()``)."""
    try:
        fn = BUILTIN_DATASETS[name]
    except KeyError:
        raise DataError(f"unknown built-in data set {name!r}; choose one of {list_builtin()}") from None
    return fn(seed, **kwargs)
