"""The engine's half of the service's reference sets: balanced halves, content keys that find an
uploaded sample again, and the retrained level of the per-example test (unlearning/membership.py)."""

from __future__ import annotations

import torch

from unlearning.membership import (
    balanced_in_masks,
    lira_scores,
    match_keys,
    retrained_level,
    sample_keys,
    tpr_at_fpr,
)


def test_every_sample_is_in_for_exactly_half_of_the_references() -> None:
    for k in (2, 3, 4, 8):
        m = balanced_in_masks(k, 1000, seed=1)
        assert m.shape == (k, 1000) and m.dtype == torch.bool
        assert bool((m.sum(0) == k // 2).all())
        # Each reference trains on about half the data.
        assert bool(((m.sum(1).float() / 1000 - (k // 2) / k).abs() < 0.06).all())
    assert torch.equal(balanced_in_masks(4, 50, 7), balanced_in_masks(4, 50, 7))
    assert not torch.equal(balanced_in_masks(4, 50, 7), balanced_in_masks(4, 50, 8))


def test_content_keys_find_a_sample_again_after_a_json_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    data = {"inputs": torch.rand(500, 8, 8, generator=g), "labels": torch.randint(0, 10, (500,), generator=g)}
    keys = sample_keys(data)
    assert keys.dtype == torch.int64 and keys.unique().numel() == 500
    pick = torch.tensor([3, 499, 0, 250])
    # As a client sends them inline: Python floats, back to float32.
    uploaded = {
        "inputs": torch.tensor(data["inputs"][pick].tolist(), dtype=torch.float32),
        "labels": torch.tensor(data["labels"][pick].tolist()),
    }
    assert match_keys(keys, sample_keys(uploaded)).tolist() == pick.tolist()
    relabelled = {"inputs": uploaded["inputs"], "labels": (uploaded["labels"] + 1) % 10}
    assert match_keys(keys, sample_keys(relabelled)).tolist() == [-1] * 4
    nudged = {"inputs": uploaded["inputs"] + 1e-6, "labels": uploaded["labels"]}
    assert match_keys(keys, sample_keys(nudged)).tolist() == [-1] * 4
    tokens = {"input_ids": torch.randint(0, 100, (20, 16), generator=g)}
    assert match_keys(sample_keys(tokens), sample_keys(take_rows(tokens, [5]))).tolist() == [5]
    assert match_keys(torch.zeros(0, dtype=torch.int64), keys[:2]).tolist() == [-1, -1]


def take_rows(data: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in data.items()}


def test_the_retrained_level_sits_at_the_fpr_and_a_memorising_target_above_it() -> None:
    """Synthetic φ: a reference that trained on a sample is confident on it (φ ~ N(4, 1)), one
    that did not is not (N(0, 1)); non-members are N(0, 1) for every reference."""
    g = torch.Generator().manual_seed(0)
    k, m, e = 8, 400, 400
    in_mask = torch.cat([balanced_in_masks(k, m, 0), torch.zeros(k, e, dtype=torch.bool)], 1)
    phi = torch.randn(k, m + e, generator=g) + 4.0 * in_mask
    level = retrained_level(phi, in_mask, m)
    assert level["n_members"] == m * (k - k // 2) and len(level["per_reference"]) == k
    assert level["tpr_at_fpr"]["0.05"] < 0.12 and level["tpr_at_fpr"]["0.01"] < 0.05
    # A target that trained on the members (φ like an IN reference's) is caught nearly always.
    target = torch.randn(m + e, generator=g) + 4.0 * torch.cat([torch.ones(m), torch.zeros(e)])
    scores, mode, _ = lira_scores(target, phi, in_mask)
    assert mode == "offline" and tpr_at_fpr(scores[:m], scores[m:], [0.05])[0.05] > 0.9
