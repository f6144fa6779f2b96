"""Checkpoints: safetensors round trips, strict loading, refusal of pickles and corrupt files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from unlearning.architectures import build_model
from unlearning.checkpoints import (
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    sha256_bytes,
    state_dict_bytes,
    validate_checkpoint,
)
from unlearning.errors import CheckpointError

MLP = {"name": "mlp", "config": {"input_dim": 6, "hidden_dims": [5], "num_classes": 3}}


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(MLP)


def _equal_states(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_and_sha256(tmp_path: Path) -> None:
    model = _mlp(0)
    path = tmp_path / "v1.safetensors"
    sha = save_checkpoint(model, path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha == sha256_bytes(state_dict_bytes(model))  # deterministic encoding
    assert not [p for p in os.listdir(tmp_path) if p != "v1.safetensors"]  # no temp file left
    other = _mlp(1)
    assert not _equal_states(model, other)
    assert load_checkpoint(other, path) is other
    assert _equal_states(model, other)


def test_round_trip_from_bytes_and_state_dict() -> None:
    model = _mlp(0)
    blob = state_dict_bytes(model.state_dict())
    state = read_state_dict(blob)
    assert set(state) == set(model.state_dict())
    other = load_checkpoint(_mlp(1), blob)
    assert _equal_states(model, other)


def test_lower_precision_checkpoint_is_cast_into_the_model() -> None:
    model = _mlp(0)
    half = {k: v.half() for k, v in model.state_dict().items()}
    other = load_checkpoint(_mlp(1), state_dict_bytes(half))
    assert other.head.weight.dtype == torch.float32
    assert torch.equal(other.head.weight, half["head.weight"].float())


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight


def test_tied_weights_save_and_load_without_alias() -> None:
    torch.manual_seed(0)
    model = _Tied()
    state = read_state_dict(state_dict_bytes(model))
    assert torch.equal(state["emb.weight"], state["head.weight"])
    # HF save_pretrained drops the tied copy; loading fills it from its alias.
    del state["head.weight"]
    other = _Tied()
    load_checkpoint(other, state)
    assert torch.equal(other.head.weight, model.emb.weight)


def _expect_error(model: nn.Module, state: dict[str, torch.Tensor], *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, state_dict_bytes(state))
    message = str(info.value)
    for needle in needles:
        assert needle in message
    return message


def test_strict_names_missing_unexpected_and_misshaped_keys() -> None:
    model = _mlp(0)
    state = dict(model.state_dict())
    before = {k: v.clone() for k, v in state.items()}
    del state["head.bias"]
    state["body.9.weight"] = torch.zeros(2)
    state["head.weight"] = torch.zeros(4, 5)
    message = _expect_error(
        model,
        state,
        "missing keys: head.bias",
        "unexpected keys: body.9.weight",
        "head.weight: expected (3, 5) got (4, 5)",
    )
    assert "'mlp'" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


def test_dtype_category_mismatch() -> None:
    model = _mlp(0)
    state = dict(model.state_dict())
    state["head.bias"] = torch.zeros(3, dtype=torch.int64)
    _expect_error(model, state, "dtype mismatches", "head.bias: expected float got int64")


def test_non_strict_allows_missing_keys_but_not_bad_shapes() -> None:
    model, original = _mlp(0), _mlp(1)
    state = dict(model.state_dict())
    del state["head.bias"]
    target = _mlp(1)
    load_checkpoint(target, state_dict_bytes(state), strict=False)
    assert torch.equal(target.head.weight, model.head.weight)
    assert torch.equal(target.head.bias, original.head.bias)
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"head\.weight: expected"):
        load_checkpoint(target, state_dict_bytes(state), strict=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_checkpoint_rejected(bad: float) -> None:
    model = _mlp(0)
    state = dict(model.state_dict())
    state["body.0.weight"] = state["body.0.weight"].clone()
    state["body.0.weight"][1, 2] = bad
    _expect_error(model, state, "non-finite", "body.0.weight")


def test_float8_checkpoint_is_checked_and_loaded() -> None:
    # isfinite has no float8 kernel: the check used to raise NotImplementedError (a 500 on upload).
    model = _mlp(0)
    state = {k: v.to(torch.float8_e4m3fn) for k, v in model.state_dict().items()}
    target = load_checkpoint(_mlp(1), state_dict_bytes(state))
    assert torch.equal(target.head.weight, state["head.weight"].float())
    state["head.bias"] = torch.full((3,), float("nan")).to(torch.float8_e4m3fn)
    _expect_error(model, state, "non-finite", "head.bias")


@pytest.mark.skipif(not hasattr(torch, "float4_e2m1fn_x2"), reason="torch without float4")
def test_packed_float4_checkpoint_is_a_dtype_mismatch() -> None:
    model = _mlp(0)
    state = dict(model.state_dict())
    state["head.bias"] = torch.zeros(3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    # safetensors cannot read F4 back; a state dict given directly reaches the dtype check
    with pytest.raises(CheckpointError, match=r"head\.bias: expected float got float4_e2m1fn_x2"):
        load_checkpoint(model, state)


class _Canary:
    """Unpickling this writes a file: proof that a loader ran pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "unpickled!"))


def test_pickle_rejected_without_unpickling(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    blob = pickle.dumps({"weight": _Canary(str(canary))}, protocol=4)
    path = tmp_path / "model.pkl"
    path.write_bytes(blob)
    for source in (blob, path):
        with pytest.raises(CheckpointError, match="pickle"):
            read_state_dict(source)
    assert not canary.exists()


def test_torch_save_files_rejected(tmp_path: Path) -> None:
    state = _mlp(0).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    with pytest.raises(CheckpointError, match="zip archive"):
        read_state_dict(buf.getvalue())
    legacy = io.BytesIO()
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickle"):
        read_state_dict(legacy.getvalue())


def test_truncated_and_garbage_rejected(tmp_path: Path) -> None:
    blob = state_dict_bytes(_mlp(0))
    path = tmp_path / "cut.safetensors"
    path.write_bytes(blob[:-7])
    for source in (blob[:-7], path):
        with pytest.raises(CheckpointError, match="truncated"):
            read_state_dict(source)
    with pytest.raises(CheckpointError, match="header claims"):
        read_state_dict(blob[:40])
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(b"")
    with pytest.raises(CheckpointError, match="not safetensors"):
        read_state_dict(b"hello world, this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.safetensors")


def test_header_lying_about_sizes_rejected() -> None:
    blob = state_dict_bytes(_mlp(0))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["head.weight"]["shape"] = [3, 6]  # the data range still holds 3 x 5 floats
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    forged = struct.pack("<Q", len(encoded)) + encoded + blob[8 + n :]
    with pytest.raises(CheckpointError, match=r"'head\.weight' is declared F32\[3, 6\]"):
        read_state_dict(forged)


def test_validate_checkpoint_against_spec(tmp_path: Path) -> None:
    model = _mlp(0)
    path = tmp_path / "v.safetensors"
    sha = save_checkpoint(model, path)
    state, digest = validate_checkpoint(MLP, path)
    assert digest == sha
    assert torch.equal(state["head.weight"], model.head.weight)
    _, digest_bytes = validate_checkpoint(model, path.read_bytes())
    assert digest_bytes == sha
    other = {"name": "mlp", "config": {"input_dim": 6, "hidden_dims": [4], "num_classes": 3}}
    with pytest.raises(CheckpointError, match=r"body.0.weight: expected \(4, 6\) got \(5, 6\)"):
        validate_checkpoint(other, path)
