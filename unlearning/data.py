"""Data sets (forget, eval, retain): formats, validation against a model, per-sample digests.

A data set is a plain dict of tensors with the same first dimension (samples):

- classification, float inputs (mlp, lenet, resnet18): ``inputs`` float32 [N, ...], ``labels`` int64 [N]
- classification, token inputs (hf-sequence-classification): ``inputs`` int64 [N, T] (``input_ids`` is
  accepted and renamed), ``labels`` int64 [N], optional ``attention_mask`` int64 [N, T]
- causal-lm: ``input_ids`` int64 [N, T] (2 <= T <= max_len), optional ``attention_mask`` int64 [N, T]
  with at least one pair of adjacent attended tokens per sample (something to predict)

Files are safetensors or ``.npz`` (``allow_pickle=False``); pickles are refused unread.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from unlearning.architectures import ModelSpec, architecture_spec, model_spec
from unlearning.checkpoints import read_safetensors, sha256_bytes, write_atomic
from unlearning.errors import DataError
from unlearning.samples import TensorDict

# The service and the worker import these two from here; unlearning.samples holds them.
from unlearning.samples import concat_datasets as concat_datasets
from unlearning.samples import num_samples as num_samples
from unlearning.upload_limits import DEFAULT_MAX_DATASET_BYTES, check_npz

ALLOWED_KEYS: frozenset[str] = frozenset({"inputs", "labels", "input_ids", "attention_mask"})
DIGEST_VERSION = b"unlearn-sample-v1\x00"

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Loading


def _array_to_tensor(name: str, arr: np.ndarray) -> torch.Tensor:
    kind = arr.dtype.kind
    if kind == "O":
        raise DataError(f"{name!r}: object arrays (or ragged nested lists) are not accepted")
    if kind in "USV":
        raise DataError(f"{name!r}: strings are not accepted; give numbers (token ids, class indices)")
    if kind == "c":
        raise DataError(f"{name!r}: complex numbers are not accepted")
    if kind not in "biuf" or (kind == "f" and arr.dtype.itemsize > 8):
        # float128 (np.longdouble) has no torch dtype.
        raise DataError(f"{name!r}: unsupported dtype {arr.dtype}")
    if kind == "u" and arr.dtype.itemsize > 1:
        # torch has no general uint16/32/64 arithmetic; every sane value fits int64.
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{name!r}: values too large for int64")
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True))


# Tensor dtypes a data set may hold (as numpy arrays give them): no complex, no packed or 8-bit floats.
_TENSOR_DTYPES: frozenset[torch.dtype] = frozenset(
    {
        torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
        torch.uint16, torch.uint32, torch.uint64,
        torch.float16, torch.bfloat16, torch.float32, torch.float64,
    }
)  # fmt: skip


def _tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """A tensor from safetensors or a caller, held to what numpy arrays may give (``_array_to_tensor``)."""
    if value.is_complex():
        raise DataError(f"{name!r}: complex numbers are not accepted")
    if value.dtype not in _TENSOR_DTYPES:
        raise DataError(f"{name!r}: unsupported dtype {str(value.dtype).removeprefix('torch.')}")
    value = value.detach().cpu()
    if value.dtype in (torch.uint16, torch.uint32, torch.uint64):
        # As for numpy arrays: int64 it is; uint64 values from 2**63 on would wrap to negatives.
        if value.dtype == torch.uint64 and bool((value.view(torch.int64) < 0).any()):
            raise DataError(f"{name!r}: values too large for int64")
        value = value.to(torch.int64)
    return value


def _value_to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return _tensor(name, value)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name!r}: not a rectangular array of numbers ({exc})") from None
    return _array_to_tensor(name, arr)


def _check_keys(keys: Sequence[str]) -> None:
    unknown = sorted(set(keys) - ALLOWED_KEYS)
    if unknown:
        raise DataError(
            f"unknown keys {unknown}; a data set has 'inputs' and 'labels' (classification) or "
            "'input_ids' (causal LM), optionally 'attention_mask'"
        )
    if not keys:
        raise DataError("the data set has no arrays")


def _from_mapping(data: Mapping[str, Any]) -> TensorDict:
    keys = [str(k) for k in data]
    _check_keys(keys)
    return {str(k): _value_to_tensor(str(k), v) for k, v in data.items()}


def _from_npz(blob: bytes, max_samples: int | None, max_bytes: int | None) -> TensorDict:
    # Declared sizes first: np.load would inflate every member, whatever its size.
    check_npz(blob, max_samples=max_samples, max_bytes=max_bytes)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            _check_keys(archive.files)
            arrays = {name: archive[name] for name in archive.files}
    except DataError:
        raise
    except ValueError as exc:
        # numpy says "Object arrays cannot be loaded when allow_pickle=False".
        raise DataError(f"npz: cannot load without unpickling ({exc}); store numeric arrays only") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"not a valid .npz archive: {exc}") from None
    return {name: _array_to_tensor(name, arr) for name, arr in arrays.items()}


def _from_bytes(blob: bytes, max_samples: int | None, max_bytes: int | None) -> TensorDict:
    if blob[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _from_npz(blob, max_samples, max_bytes)
    if blob[:6] == b"\x93NUMPY":
        raise DataError("this is a single .npy array; save named arrays with np.savez (.npz) or safetensors")
    tensors = read_safetensors(blob, error=DataError, what="data set", max_samples=max_samples)
    _check_keys(list(tensors))
    return {name: _tensor(name, t) for name, t in tensors.items()}


def load_dataset(
    source: Source, *, max_samples: int | None = None, max_bytes: int | None = DEFAULT_MAX_DATASET_BYTES
) -> TensorDict:
    """Tensors of a data set from a path (.safetensors / .npz), raw bytes, or a mapping.

    Mappings may hold tensors, numpy arrays or nested lists (inline JSON). Dtypes are kept as
    given; :func:`validate_dataset` normalises them against a model. Files are refused from their
    headers, before their data is read, when they declare more than ``max_samples`` rows, or (npz)
    inflate to more than ``max_bytes``; ``None`` means no limit.
    """
    if isinstance(source, Mapping):
        return _from_mapping(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source), max_samples, max_bytes)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"data set file not found: {path}")
        return _from_bytes(path.read_bytes(), max_samples, max_bytes)
    raise DataError(f"a data set must be a path, bytes or a mapping of arrays, got {type(source).__name__}")


def _contiguous(data: Mapping[str, torch.Tensor]) -> TensorDict:
    return {k: v.detach().cpu().contiguous() for k, v in data.items()}


def dataset_bytes(data: Source) -> bytes:
    """The safetensors encoding of a data set."""
    tensors = load_dataset(data)
    # clone() so that slices of one storage (subset views) serialise independently.
    return safetensors.torch.save({k: v.clone() for k, v in _contiguous(tensors).items()})


def save_dataset(data: Source, path: str | os.PathLike[str]) -> str:
    """Write a data set atomically as safetensors; returns the sha256 hex of the file."""
    blob = dataset_bytes(data)
    write_atomic(path, blob)
    return sha256_bytes(blob)


# ---------------------------------------------------------------------------------------------
# Validation against a model


def _resolve_spec(model_or_spec: nn.Module | ModelSpec | Mapping[str, Any]) -> ModelSpec:
    if isinstance(model_or_spec, ModelSpec):
        return model_or_spec
    if isinstance(model_or_spec, nn.Module):
        return model_spec(model_or_spec)
    return architecture_spec(model_or_spec)


def _first(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def _shape_matches(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    # -1 in a spec's input_shape means any size (resnet18 takes any H, W), but not 0: no pixels.
    return len(got) == len(want) and all(
        g == w or (w == -1 and g > 0) for g, w in zip(got, want, strict=True)
    )


def _float_inputs(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    if spec.input_shape is not None:
        got = tuple(x.shape[1:])
        want = tuple(spec.input_shape)
        if not _shape_matches(got, want):
            shown = (
                "("
                + ", ".join("*" if w == -1 else str(w) for w in want)
                + ("," if len(want) == 1 else "")
                + ")"
            )
            hint = ""
            if -1 not in want and int(np.prod(got)) == int(np.prod(want)):
                hint = f" (same number of values: reshape to [N, {', '.join(map(str, want))}])"
            raise DataError(f"inputs: expected per-sample shape {shown} for {spec.name!r}, got {got}{hint}")
    x = x.to(torch.float32)
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        raise DataError(
            f"inputs: NaN or Inf values in {int(bad.sum())} sample(s), first at sample {_first(bad)}"
        )
    return x


def _labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    if y.dim() != 1:
        raise DataError(f"labels: expected shape [N] (one class index per sample), got {list(y.shape)}")
    if y.is_floating_point():
        non_integral = ~torch.isfinite(y) | (y != torch.round(y))
        if bool(non_integral.any()):
            i = _first(non_integral)
            raise DataError(f"labels must be integer class indices; sample {i} has {y[i].item()}")
    # Float labels are range-checked in float64 before the cast: one beyond int64 (1e30, or 2**64
    # from JSON) would wrap to a negative number. (Compared in their own dtype, bfloat16 or uint8
    # labels would round num_classes.)
    y = y.double() if y.is_floating_point() else y.to(torch.int64)
    out_of_range = (y < 0) | (y >= num_classes)
    if bool(out_of_range.any()):
        i = _first(out_of_range)
        raise DataError(
            f"labels must be in [0, {num_classes}); sample {i} has {int(y[i].item())} "
            f"({int(out_of_range.sum())} sample(s) out of range)"
        )
    return y.to(torch.int64)


def _token_ids(name: str, ids: torch.Tensor, spec: ModelSpec, min_len: int) -> torch.Tensor:
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise DataError(f"{name}: token ids must be integers, got {str(ids.dtype).removeprefix('torch.')}")
    if ids.dim() != 2:
        raise DataError(
            f"{name}: expected shape [N, T] (one row of token ids per sample), got {list(ids.shape)}"
        )
    length = int(ids.shape[1])
    if length < min_len:
        raise DataError(
            f"{name}: sequences must have at least {min_len} tokens"
            + (" (the model learns each next token)" if min_len > 1 else "")
            + f", got {length}"
        )
    if spec.max_len is not None and length > spec.max_len:
        raise DataError(f"{name}: sequence length {length} exceeds the model's max_len {spec.max_len}")
    ids = ids.to(torch.int64)
    vocab = spec.vocab_size if spec.vocab_size is not None else spec.num_classes
    bad = ((ids < 0) | (ids >= vocab)).any(dim=1)
    if bool(bad.any()):
        i = _first(bad)
        row = ids[i]
        value = int(row[(row < 0) | (row >= vocab)][0])
        raise DataError(f"{name}: token ids must be in [0, {vocab}); sample {i} has {value}")
    return ids


def _attention_mask(
    mask: torch.Tensor, ids: torch.Tensor, min_len: int, causal: bool = False
) -> torch.Tensor:
    if mask.is_floating_point():
        raise DataError("attention_mask must hold integers 0/1 (or booleans)")
    if tuple(mask.shape) != tuple(ids.shape):
        raise DataError(
            f"attention_mask: expected shape {list(ids.shape)} like the ids, got {list(mask.shape)}"
        )
    mask = mask.to(torch.int64)
    if bool(((mask != 0) & (mask != 1)).any()):
        raise DataError("attention_mask may only hold 0 and 1")
    short = mask.sum(dim=1) < min_len
    if bool(short.any()):
        raise DataError(f"attention_mask: sample {_first(short)} has fewer than {min_len} attended tokens")
    if causal:
        # A next-token prediction counts only where the context token and its target are both
        # attended (losses.lm_targets): a mask like [1, 0, 1, 0] would leave nothing to score.
        unscorable = ~(mask[:, 1:].bool() & mask[:, :-1].bool()).any(dim=1)
        if bool(unscorable.any()):
            raise DataError(
                f"attention_mask: sample {_first(unscorable)} has no two adjacent attended tokens, "
                "so no next-token prediction in it can be scored "
                f"({int(unscorable.sum())} sample(s) like this)"
            )
    return mask


def validate_dataset(
    data: Source,
    model_or_spec: nn.Module | ModelSpec | Mapping[str, Any],
    *,
    max_samples: int | None = None,
    max_bytes: int | None = DEFAULT_MAX_DATASET_BYTES,
) -> TensorDict:
    """Normalised tensors that fit the model, or a DataError saying what to fix.

    ``model_or_spec`` is a built model, its ModelSpec, or an architecture ``{"name", "config"}``.
    Float inputs become float32, labels / token ids / masks int64.
    """
    spec = _resolve_spec(model_or_spec)
    tensors = load_dataset(data, max_samples=max_samples, max_bytes=max_bytes)
    keys = set(tensors)
    tokens = spec.input_kind == "tokens"
    if spec.task == "classification" and tokens and "input_ids" in keys:
        if "inputs" in keys:
            raise DataError("give the token ids once, as 'inputs' or 'input_ids', not both")
        tensors["inputs"] = tensors.pop("input_ids")
        keys = set(tensors)

    if spec.task == "causal-lm":
        required, allowed = {"input_ids"}, {"input_ids", "attention_mask"}
        usage = "'input_ids' [N, T] and optionally 'attention_mask' (targets are the next tokens)"
    elif tokens:
        required, allowed = {"inputs", "labels"}, {"inputs", "labels", "attention_mask"}
        usage = "token ids 'inputs' (or 'input_ids') [N, T], 'labels' [N], optionally 'attention_mask'"
    else:
        required, allowed = {"inputs", "labels"}, {"inputs", "labels"}
        usage = "float 'inputs' and integer 'labels'"
    missing, extra = sorted(required - keys), sorted(keys - allowed)
    if missing or extra:
        found = f"missing {missing}" if missing else ""
        found += ("; " if missing and extra else "") + (f"unexpected {extra}" if extra else "")
        raise DataError(f"a {spec.task} model ({spec.name!r}) takes {usage}: {found}")

    n = num_samples(tensors)
    if n == 0:
        raise DataError("the data set is empty (0 samples)")
    if max_samples is not None and n > max_samples:
        raise DataError(f"too many samples: {n} (the limit is {max_samples})")

    out: TensorDict = {}
    ids_key = "input_ids"
    if spec.task == "causal-lm":
        out["input_ids"] = _token_ids("input_ids", tensors["input_ids"], spec, min_len=2)
    else:
        if tokens:
            out["inputs"] = _token_ids("inputs", tensors["inputs"], spec, min_len=1)
            ids_key = "inputs"
        else:
            out["inputs"] = _float_inputs(tensors["inputs"], spec)
        out["labels"] = _labels(tensors["labels"], spec.num_classes)
    if "attention_mask" in tensors:
        min_len = 2 if spec.task == "causal-lm" else 1
        out["attention_mask"] = _attention_mask(
            tensors["attention_mask"], out[ids_key], min_len, causal=spec.task == "causal-lm"
        )
    return _contiguous(out)


# ---------------------------------------------------------------------------------------------
# Digests


def sample_digests(data: Mapping[str, torch.Tensor]) -> list[str]:
    """sha256 hex per sample over (key, dtype, per-sample shape, little-endian bytes), keys sorted.

    Digest data after :func:`validate_dataset`, so that the same values give the same digests
    whichever format (safetensors, npz, JSON) they arrived in.
    """
    n = num_samples(data)
    columns: list[tuple[bytes, np.ndarray]] = []
    for key in sorted(data):
        t = data[key].detach().cpu().contiguous()
        dtype_name = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; its bits are what we hash
            t = t.view(torch.int16)
        arr = t.numpy()
        per_sample = int(np.prod(t.shape[1:], dtype=np.int64))
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(n, per_sample)
        rows = arr.view(np.uint8).reshape(n, per_sample * arr.dtype.itemsize)
        shape = ",".join(str(d) for d in t.shape[1:])
        prefix = f"{key}\x00{dtype_name}\x00{shape}\x00".encode() + struct.pack("<Q", rows.shape[1])
        columns.append((prefix, rows))
    return [
        hashlib.sha256(
            DIGEST_VERSION + b"".join(prefix + rows[i].tobytes() for prefix, rows in columns)
        ).hexdigest()
        for i in range(n)
    ]
