"""Uploaded tensor files are refused from their declared sizes, before their data is read.

Regression tests for decompression bombs (.npz), oversized safetensors headers and metadata, and
headers that crashed the JSON parser.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

import unlearning.checkpoints as checkpoints
from unlearning import build_model, load_dataset, state_dict_bytes, validate_dataset
from unlearning.checkpoints import validate_checkpoint
from unlearning.errors import CheckpointError, DataError
from unlearning.upload_limits import DEFAULT_MAX_DATASET_BYTES, MAX_HEADER_BYTES, MAX_METADATA_BYTES

MLP = {"name": "mlp", "config": {"input_dim": 4, "hidden_dims": [8], "num_classes": 3}}
MiB = 1024 * 1024


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _zeros_npz(rows: int, cols: int) -> bytes:
    """An .npz whose 'inputs' inflates to rows*cols*4 bytes of zeros, built in chunks so that
    the test itself never holds the inflated array."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("inputs.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((rows, cols)))
            chunk = bytes(4 * MiB)
            left = rows * cols * 4
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        archive.writestr("labels.npy", _npy_header((rows,), "<i8") + bytes(8 * rows))
    return out.getvalue()


def _npz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def no_npz_data_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if np.load runs (it inflates every member): the refusal must come first."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("np.load ran before the declared sizes were checked")

    monkeypatch.setattr(np, "load", refuse)
    yield


# --- npz ---------------------------------------------------------------------------------------


def test_npz_bomb_is_refused_before_inflating() -> None:
    rows = DEFAULT_MAX_DATASET_BYTES // (4 * 64) + 1024  # inflates to just over the default limit
    blob = _zeros_npz(rows, 64)
    assert len(blob) < 2 * MiB  # a small upload ...
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"inflates to more than 256\.0 MiB"):
            load_dataset(blob)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB  # ... that no longer costs a quarter of a gigabyte


def test_npz_byte_limit_is_a_parameter(no_npz_data_read: None) -> None:
    blob = _npz({"inputs.npy": _npy_header((1024, 64)) + bytes(1024 * 64 * 4)})
    with pytest.raises(DataError, match=r"inflates to more than 0\.1 MiB"):
        validate_dataset(blob, MLP, max_bytes=100 * 1024)


def test_npy_header_declaring_more_than_its_member_holds_is_refused(no_npz_data_read: None) -> None:
    # numpy would allocate the declared 4 TB before noticing the data is missing.
    blob = _npz({"inputs.npy": _npy_header((10**12, 1)), "labels.npy": _npy_header((1,), "<i8") + bytes(8)})
    with pytest.raises(DataError, match="declares 4000000000000 bytes of data"):
        load_dataset(blob)


def test_npz_sample_limit_is_checked_from_the_headers(no_npz_data_read: None) -> None:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((1000, 4), np.float32), labels=np.zeros(1000, np.int64))
    with pytest.raises(DataError, match=r"too many samples: 1000 \(the limit is 10\)"):
        validate_dataset(buf.getvalue(), MLP, max_samples=10)


def test_npz_member_that_is_not_an_array_is_refused(no_npz_data_read: None) -> None:
    # np.load hands back any other member whole, as bytes, however large it inflates.
    blob = _npz({"inputs": bytes(MiB), "labels.npy": _npy_header((1,), "<i8") + bytes(8)})
    with pytest.raises(DataError, match=r"member 'inputs' is not a \.npy array"):
        load_dataset(blob)


def test_npz_object_array_is_refused_from_its_header(no_npz_data_read: None) -> None:
    blob = _npz({"inputs.npy": _npy_header((2,), "|O") + b"\x80\x04N."})
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(blob)


def test_npz_within_the_limits_still_loads() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=np.ones((10, 4), np.float32), labels=np.arange(10) % 3)
    data = validate_dataset(buf.getvalue(), MLP, max_samples=10, max_bytes=1024)
    assert data["inputs"].shape == (10, 4)


# --- safetensors data sets -----------------------------------------------------------------------


def test_safetensors_sample_limit_is_checked_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = safetensors.torch.save(
        {"inputs": torch.zeros(1000, 4), "labels": torch.zeros(1000, dtype=torch.long)}
    )

    def refuse(_data: bytes) -> Any:
        raise AssertionError("tensors were loaded before the sample limit was checked")

    monkeypatch.setattr(checkpoints, "load_safetensor_bytes", refuse)
    with pytest.raises(DataError, match=r"too many samples: 1000 \(the limit is 10\)"):
        validate_dataset(blob, MLP, max_samples=10)


# --- safetensors headers (checkpoints) -------------------------------------------------------------


def _with_header(blob: bytes, header: bytes) -> bytes:
    (n,) = struct.unpack("<Q", blob[:8])
    return struct.pack("<Q", len(header)) + header + blob[8 + n :]


def _checkpoint_with_metadata(metadata_bytes: int) -> bytes:
    blob = state_dict_bytes(build_model(MLP))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = {"format": "pt", "notes": "x" * metadata_bytes}
    return _with_header(blob, json.dumps(header).encode())


def test_checkpoint_with_large_metadata_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"__metadata__ is \d+ bytes; at most 65536"):
        validate_checkpoint(MLP, _checkpoint_with_metadata(MAX_METADATA_BYTES + 1))
    validate_checkpoint(MLP, _checkpoint_with_metadata(1000))  # a little metadata is fine


def test_checkpoint_header_size_is_bounded() -> None:
    blob = state_dict_bytes(build_model(MLP))
    (n,) = struct.unpack("<Q", blob[:8])
    padded = blob[8 : 8 + n] + b" " * (MAX_HEADER_BYTES + 1 - n)  # trailing spaces: valid safetensors
    with pytest.raises(CheckpointError, match="header length field says 16777217 bytes, at most 16777216"):
        validate_checkpoint(MLP, _with_header(blob, padded))


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON"),
        (
            b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
            "not valid JSON",
        ),
        (b'{"w": {"dtype": "F5", "shape": [1], "data_offsets": [0, 4]}}', "unknown dtype 'F5'"),
    ],
    ids=["deeply-nested", "huge-integer", "unknown-dtype"],
)
def test_malformed_header_is_a_checkpoint_error(header: bytes, needle: str) -> None:
    blob = struct.pack("<Q", len(header)) + header + bytes(4)
    with pytest.raises(CheckpointError, match=needle):
        validate_checkpoint(MLP, blob)
