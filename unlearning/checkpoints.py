"""Checkpoint I/O: safetensors state dicts only, content-addressed by sha256.

Nothing here ever unpickles: ``torch.load`` / ``pickle`` can run arbitrary code from an upload.
Inputs are sniffed first so that a pickle or a ``torch.save`` zip gets a clear refusal instead
of a parser error, and the safetensors header is checked against the byte count before any
tensor is materialised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors.torch import load as load_safetensor_bytes
from torch import nn

from unlearning.errors import CheckpointError, InvalidInputError
from unlearning.upload_limits import MAX_HEADER_BYTES, MAX_METADATA_BYTES, check_safetensors_limits

PathLike = str | os.PathLike[str]
Source = PathLike | bytes | bytearray | memoryview
StateDict = dict[str, torch.Tensor]

# MAX_HEADER_BYTES (imported above, 16 MiB): a larger header is refused before it is read.
_LIST_LIMIT = 20
_CHUNK = 1 << 20

_DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 0.5,
    "F8_E5M2FNUZ": 1, "F8_E4M3FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Writing


def _as_state_dict(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        return model_or_state_dict.state_dict()
    if isinstance(model_or_state_dict, Mapping):
        return model_or_state_dict
    raise InvalidInputError(
        f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}"
    )


def _storage_key(t: torch.Tensor) -> tuple[torch.device, int]:
    return (t.device, t.untyped_storage().data_ptr())


def serializable_state_dict(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> StateDict:
    """Detached, contiguous CPU tensors that safetensors accepts.

    safetensors refuses tensors that share storage (tied embeddings, views), so every tensor
    after the first on a storage, and every partial view, is cloned; the rest are not copied.
    """
    state = _as_state_dict(model_or_state_dict)
    out: StateDict = {}
    seen: set[tuple[torch.device, int]] = set()
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise InvalidInputError(f"state dict entries must be str → Tensor, got {name!r}")
        if tensor.is_meta:
            raise InvalidInputError(f"tensor {name!r} is on the meta device and has no data")
        t = tensor.detach()
        key = _storage_key(t)
        partial = t.untyped_storage().nbytes() != t.nelement() * t.element_size()
        if key in seen or partial or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(key)
        out[name] = t.cpu().contiguous()
    return out


def state_dict_bytes(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    """The safetensors encoding of a model's state dict (deterministic for equal tensors)."""
    return safetensors.torch.save(serializable_state_dict(model_or_state_dict), metadata={"format": "pt"})


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename, so readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: PathLike) -> str:
    """Write the state dict atomically as safetensors; returns the sha256 hex of the file."""
    data = state_dict_bytes(model_or_state_dict)
    write_atomic(path, data)
    return sha256_bytes(data)


# ---------------------------------------------------------------------------------------------
# Reading


def sniff_safetensors(
    head: bytes,
    total_size: int,
    *,
    error: type[InvalidInputError] = CheckpointError,
    what: str = "checkpoint",
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> int:
    """Check the first bytes of a file; returns the header length or raises ``error``."""
    if total_size == 0:
        raise error(f"the {what} is empty")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise error(
            f"the {what} is a Python pickle; pickle files are not accepted (loading one can run "
            "arbitrary code). Save it with safetensors (safetensors.torch.save_file)"
        )
    if head[:4] == b"PK\x03\x04":
        raise error(
            f"the {what} is a zip archive (torch.save or .npz), not safetensors; torch.save files are "
            "not accepted because loading them unpickles code. Save it with safetensors.torch.save_file"
        )
    if total_size < 8 or len(head) < 8:
        raise error(f"the {what} is not safetensors: only {total_size} bytes")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > max_header_bytes:
        raise error(
            f"the {what} is not safetensors or its header is too large: the header length field "
            f"says {header_len} bytes, at most {max_header_bytes} are accepted"
        )
    if header_len > total_size - 8:
        raise error(
            f"the {what} is truncated or not safetensors: header claims {header_len} bytes "
            f"but only {total_size - 8} follow"
        )
    if len(head) > 8 and head[8:9] != b"{":
        raise error(f"the {what} is not safetensors: the header is not a JSON object")
    return int(header_len)


def check_safetensors_header(
    header: bytes,
    data_len: int,
    *,
    error: type[InvalidInputError] = CheckpointError,
    what: str = "checkpoint",
    max_samples: int | None = None,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> dict[str, Any]:
    """Parse the JSON header and check that every tensor's byte range matches its dtype and shape,
    that ``__metadata__`` is small, and (for data sets) that no tensor has over ``max_samples`` rows."""
    try:
        parsed = json.loads(header)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and integers beyond Python's digit limit;
        # RecursionError a header nested thousands deep.
        raise error(f"the {what} is not safetensors: its header is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise error(f"the {what} is not safetensors: its header is not a JSON object")
    check_safetensors_limits(
        parsed, max_samples=max_samples, max_metadata_bytes=max_metadata_bytes, error=error, what=what
    )
    needed = 0
    for name, info in parsed.items():
        if name == "__metadata__":
            continue
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= info.keys()):
            raise error(f"corrupt safetensors {what}: bad header entry for tensor {name!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        ok_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ok_offsets = (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        )
        if not (ok_shape and ok_offsets):
            raise error(f"corrupt safetensors {what}: bad shape or offsets for tensor {name!r}")
        span = offsets[1] - offsets[0]
        if dtype not in _DTYPE_BYTES:
            # Refused here, not left to the loader: an unknown dtype has no size to check the span by.
            raise error(f"corrupt safetensors {what}: unknown dtype {dtype!r} for tensor {name!r}")
        expected = math.prod(shape) * _DTYPE_BYTES[dtype]
        if expected != span:
            raise error(
                f"corrupt safetensors {what}: tensor {name!r} is declared {dtype}{shape} "
                f"({expected:g} bytes) but its data range holds {span} bytes"
            )
        needed = max(needed, offsets[1])
    if needed > data_len:
        raise error(
            f"the {what} is truncated: its header needs {needed} data bytes but only {data_len} are present"
        )
    return parsed


def read_safetensors(
    source: Source,
    *,
    error: type[InvalidInputError] = CheckpointError,
    what: str = "checkpoint",
    max_samples: int | None = None,
) -> StateDict:
    """Tensors of a safetensors file or buffer, after sniffing and header checks (header and
    metadata sizes, byte ranges, and ``max_samples`` rows per tensor for data sets)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        header_len = sniff_safetensors(data[:16], len(data), error=error, what=what)
        check_safetensors_header(
            data[8 : 8 + header_len],
            len(data) - 8 - header_len,
            error=error,
            what=what,
            max_samples=max_samples,
        )
        loader = lambda: load_safetensor_bytes(data)  # noqa: E731
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise error(f"{what} file not found: {path}")
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header_len = sniff_safetensors(fh.read(16), size, error=error, what=what)
            fh.seek(8)
            header = fh.read(header_len)
        check_safetensors_header(
            header, size - 8 - header_len, error=error, what=what, max_samples=max_samples
        )
        loader = lambda: safetensors.torch.load_file(str(path))  # noqa: E731
    else:
        raise error(f"a {what} must be a path or bytes, got {type(source).__name__}")
    try:
        return loader()
    except Exception as exc:  # SafetensorError and friends: anything the parser rejects
        raise error(f"corrupt safetensors {what}: {exc}") from None


def read_state_dict(source: Source) -> StateDict:
    """Read a safetensors state dict from a path or bytes; refuses anything else (CheckpointError)."""
    return read_safetensors(source, error=CheckpointError, what="checkpoint")


# ---------------------------------------------------------------------------------------------
# Checking against a model


# Packed 4-bit floats (two values per byte, torch >= 2.8): no arithmetic, so no loading into a model.
_PACKED = {d for d in (getattr(torch, "float4_e2m1fn_x2", None),) if d is not None}


def _category(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype in _PACKED:
        return "packed"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "integer"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" … and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def _tied_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Parameter name → other names of the same Parameter (tied weights), meta-device safe."""
    by_id: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), []).append(name)
    return {n: [m for m in names if m != n] for names in by_id.values() if len(names) > 1 for n in names}


def _all_finite(t: torch.Tensor) -> bool:
    # isfinite has no 8-bit float kernels (F8_E4M3 etc.): those are checked as float32.
    return bool(torch.isfinite(t.float() if t.element_size() == 1 else t).all())


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> StateDict:
    """Check keys, shapes, dtype categories and finiteness against ``model``; returns a loadable dict.

    A key missing only because it is tied to a present one (HF ``save_pretrained`` drops the tied
    LM head) is filled from its alias. All problems are reported in one CheckpointError.
    """
    expected = model.state_dict()
    got = dict(state_dict)
    aliases = _tied_aliases(model)
    for key in expected.keys() - got.keys():
        source = next((a for a in aliases.get(key, ()) if a in got), None)
        if source is not None:
            got[key] = got[source]

    problems: list[str] = []
    missing = sorted(expected.keys() - got.keys())
    unexpected = sorted(got.keys() - expected.keys())
    if strict and missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    shapes, dtypes, non_finite = [], [], []
    for key in sorted(expected.keys() & got.keys()):
        want, have = expected[key], got[key]
        if tuple(want.shape) != tuple(have.shape):
            shapes.append(f"{key}: expected {tuple(want.shape)} got {tuple(have.shape)}")
        elif _category(want.dtype) != _category(have.dtype):
            dtypes.append(
                f"{key}: expected {_category(want.dtype)} got {str(have.dtype).removeprefix('torch.')}"
            )
        elif (have.is_floating_point() or have.is_complex()) and not _all_finite(have):
            non_finite.append(key)
    if shapes:
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if dtypes:
        problems.append(f"dtype mismatches: {_listing(dtypes)}")
    if non_finite:
        problems.append(f"non-finite values (NaN/Inf) in: {_listing(non_finite)}")
    if problems:
        spec = getattr(model, "spec", None)
        arch = f" for architecture {spec.name!r}" if spec is not None else ""
        raise CheckpointError(f"checkpoint does not fit the model{arch}: " + "; ".join(problems))
    return {k: v for k, v in got.items() if k in expected}


def load_checkpoint(
    model: nn.Module, source: Source | Mapping[str, torch.Tensor], *, strict: bool = True
) -> nn.Module:
    """Load a safetensors checkpoint (path, bytes or state dict) into ``model`` in place; returns it.

    Values are copied into the existing parameters, so the model keeps its device and dtype.
    """
    state = dict(source) if isinstance(source, Mapping) else read_state_dict(source)
    checked = check_state_dict(model, state, strict=strict)
    model.load_state_dict(checked, strict=strict)
    return model


def validate_checkpoint(
    spec_or_model: nn.Module | Mapping[str, Any] | Any, source: Source, *, strict: bool = True
) -> tuple[StateDict, str]:
    """Check that a checkpoint fits an architecture without loading it; returns (state dict, sha256).

    Given a spec (``{"name", "config"}`` or a ModelSpec) the model is built on the meta device,
    so only shapes and dtypes are compared and no parameter memory is allocated.
    """
    if isinstance(spec_or_model, nn.Module):
        model = spec_or_model
    else:
        from unlearning.architectures import build_model

        model = build_model(spec_or_model, device="meta")
    state = read_state_dict(source)
    if isinstance(source, bytes | bytearray | memoryview):
        digest = sha256_bytes(source)
    else:
        digest = sha256_file(source)
    check_state_dict(model, state, strict=strict)
    return state, digest
