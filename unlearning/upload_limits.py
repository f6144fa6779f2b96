"""Limits on tensor files, checked from what they declare before any of their data is read.

An ``.npz`` is a zip archive: a 1 MiB upload can declare, and inflate to, a gigabyte of zeros, and
numpy allocates each array from its ``.npy`` header before reading a byte of it. A safetensors file
starts with a JSON header of any size the file claims. So the declared sizes (zip members' sizes,
``.npy`` shapes and dtypes, the safetensors header and its ``__metadata__``) are checked against
limits first, and a file is loaded only once they fit.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from unlearning.errors import DataError, InvalidInputError

# A header this large already describes ~150,000 tensors; beyond it, it is not a model we serve.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Free-form strings in a header ({"format": "pt"} in practice): stored and served with every
# version, so they are kept small.
MAX_METADATA_BYTES = 64 * 1024
# The service's default body limit: an .npz may not inflate to more than an uncompressed upload
# (safetensors) could hold. Callers with larger trusted files pass their own limit (or None).
DEFAULT_MAX_DATASET_BYTES = 256 * 1024 * 1024
# numpy's own default bound on a .npy header (its dtype and shape as a Python literal).
MAX_NPY_HEADER_BYTES = 10_000
# A data set has at most four arrays (inputs, labels, input_ids, attention_mask).
MAX_NPZ_MEMBERS = 16

ErrorType = type[InvalidInputError]


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of a .npy stream, reading its header only (never the data)."""
    version = npy_format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = npy_format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    elif version == (2, 0):
        shape, _fortran, dtype = npy_format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    else:
        # 3.0 exists only for structured dtypes with non-latin-1 field names: never a data set.
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), dtype


def _check_npy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_samples: int | None, error: ErrorType
) -> None:
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as fh:
        shape, dtype = _npy_header(fh)
        header_end = fh.tell()
    if dtype.hasobject:
        raise error(
            f"npz: {name!r} is an object array, which cannot be loaded without unpickling; "
            "store numeric arrays only"
        )
    data_bytes = math.prod(shape) * dtype.itemsize
    if header_end + data_bytes > info.file_size:
        raise error(
            f"not a valid .npz archive: {name!r} declares {data_bytes} bytes of data "
            f"but its member holds {info.file_size - header_end}"
        )
    if max_samples is not None and shape and shape[0] > max_samples:
        raise error(f"too many samples: {shape[0]} (the limit is {max_samples})")


def check_npz(
    blob: bytes,
    *,
    max_samples: int | None = None,
    max_bytes: int | None = DEFAULT_MAX_DATASET_BYTES,
    error: ErrorType = DataError,
) -> None:
    """Refuse an .npz whose declared sizes exceed the limits, reading headers only.

    Checks, before any array data is inflated: every member is a ``<name>.npy`` (np.load would
    read any other member whole, as bytes), the members' declared uncompressed sizes add up to at
    most ``max_bytes`` (zipfile stops inflating a member at its declared size, so this bounds the
    memory the load takes), each ``.npy`` header's shape and dtype fit its member, and no array has
    more than ``max_samples`` rows. ``None`` means no limit.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise error(f"npz: {len(members)} members; a data set holds at most {MAX_NPZ_MEMBERS} arrays")
            total = 0
            for info in members:
                if info.is_dir() or not info.filename.endswith(".npy"):
                    raise error(f"npz: member {info.filename!r} is not a .npy array")
                total += info.file_size
                if max_bytes is not None and total > max_bytes:
                    raise error(
                        f"npz: the archive inflates to more than {_mib(max_bytes)} "
                        f"(the limit for a data set); send fewer or smaller arrays"
                    )
            for info in members:
                _check_npy_member(archive, info, max_samples, error)
    except InvalidInputError:
        raise
    # ValueError: numpy's header parser; RuntimeError: an encrypted member; NotImplementedError:
    # an unsupported compression method.
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise error(f"not a valid .npz archive: {exc}") from None


def check_safetensors_limits(
    header: Mapping[str, Any],
    *,
    max_samples: int | None = None,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
    error: ErrorType = DataError,
    what: str = "data set",
) -> None:
    """Refuse a parsed safetensors header whose ``__metadata__`` is too large or malformed, or
    whose tensors have more than ``max_samples`` rows (before any tensor is materialised)."""
    metadata = header.get("__metadata__")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise error(f"corrupt safetensors {what}: __metadata__ must map strings to strings")
        size = len(json.dumps(metadata).encode())
        if size > max_metadata_bytes:
            raise error(
                f"the {what}'s safetensors __metadata__ is {size} bytes; at most "
                f"{max_metadata_bytes} are accepted"
            )
    if max_samples is None:
        return
    for name, info in header.items():
        shape = info.get("shape") if name != "__metadata__" and isinstance(info, dict) else None
        if isinstance(shape, list) and shape and isinstance(shape[0], int) and shape[0] > max_samples:
            raise error(f"too many samples: {shape[0]} (the limit is {max_samples})")
