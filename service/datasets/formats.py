"""An uploaded tensor file (safetensors or ``.npz``), read column by column and rows at a time.

The upload arrives as one bytes object (bounded by the body limit); nothing here makes a second
full copy of it. Safetensors columns are numpy views into those bytes; ``.npz`` members are
inflated as streams, a chunk of rows at a time. Declared sizes are checked by the engine's
``unlearning.upload_limits`` rules (through ``check_npz`` and the safetensors header check) before
any array data is read, and nothing is ever unpickled (object arrays are refused from their
``.npy`` header).
"""

from __future__ import annotations

import io
import math
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from service.datasets.states import UploadFormat
from unlearning.checkpoints import check_safetensors_header, sniff_safetensors
from unlearning.errors import DataError
from unlearning.upload_limits import MAX_NPY_HEADER_BYTES, check_npz

# safetensors dtypes a data set may hold, as numpy reads them (little-endian); BF16 has no numpy
# dtype and is read as int16 bits. 8-bit floats and complex numbers are refused (as the engine does).
_SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<i2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip

Chunk = dict[str, Any]  # column name -> numpy array (or a bfloat16 tensor) of a range of rows


@dataclass(frozen=True)
class Column:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    bfloat16: bool = False

    @property
    def rows(self) -> int | None:
        return self.shape[0] if self.shape else None


class TensorFile(ABC):
    """Named columns of an upload; ``read`` loads one whole (small) column, ``chunks`` streams rows."""

    format: UploadFormat
    columns: dict[str, Column]

    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """One whole column, as a numpy array of its own (for the id columns)."""

    @abstractmethod
    def chunks(self, names: Sequence[str], n_rows: int, chunk_rows: int) -> Iterator[tuple[int, Chunk]]:
        """(first row, columns) for consecutive ranges of ``chunk_rows`` rows, in order."""


def open_upload(blob: bytes, *, max_samples: int, max_bytes: int) -> TensorFile:
    """The columns of an upload, after the engine's declared-size checks (DataError if refused)."""
    if blob[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        # Every member's declared size, .npy header, dtype (no object arrays) and row count,
        # before a byte of array data is inflated.
        check_npz(blob, max_samples=max_samples, max_bytes=max_bytes)
        return NpzFile(blob)
    if blob[:6] == b"\x93NUMPY":
        raise DataError("this is a single .npy array; save named arrays with np.savez (.npz) or safetensors")
    header_len = sniff_safetensors(blob[:16], len(blob), error=DataError, what="data set")
    header = check_safetensors_header(
        blob[8 : 8 + header_len],
        len(blob) - 8 - header_len,
        error=DataError,
        what="data set",
        max_samples=max_samples,
    )
    return SafetensorsFile(blob, 8 + header_len, header)


class SafetensorsFile(TensorFile):
    format = UploadFormat.SAFETENSORS

    def __init__(self, blob: bytes, data_start: int, header: dict[str, Any]) -> None:
        self._views: dict[str, np.ndarray] = {}
        self.columns = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numpy_dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
            if numpy_dtype is None:
                raise DataError(f"{name!r}: unsupported dtype {info['dtype']} in a data set")
            shape = tuple(int(d) for d in info["shape"])
            dtype = np.dtype(numpy_dtype)
            start, _end = info["data_offsets"]
            count = math.prod(shape)
            # A view into the upload's bytes (read-only, possibly unaligned): rows are copied out
            # of it a chunk at a time, never the whole column.
            view = (
                np.frombuffer(blob, dtype=dtype, count=count, offset=data_start + start)
                if count
                else np.empty(0, dtype=dtype)
            )
            self._views[name] = view.reshape(shape)
            self.columns[name] = Column(name, dtype, shape, bfloat16=info["dtype"] == "BF16")

    def read(self, name: str) -> np.ndarray:
        return np.array(self._views[name], copy=True)

    def _rows(self, name: str, start: int, stop: int) -> Any:
        rows = self._views[name][start:stop]
        if self.columns[name].bfloat16:
            return torch.from_numpy(np.array(rows, dtype=np.int16)).view(torch.bfloat16)
        return rows  # the engine copies it (native byte order) when it makes a tensor of it

    def chunks(self, names: Sequence[str], n_rows: int, chunk_rows: int) -> Iterator[tuple[int, Chunk]]:
        for start in range(0, n_rows, chunk_rows):
            stop = min(start + chunk_rows, n_rows)
            yield start, {name: self._rows(name, start, stop) for name in names}


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    fortran_order: bool


def _read_npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = npy_format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = npy_format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
    else:  # check_npz refused anything else already
        raise DataError(f"npz: unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _read_exactly(fh: IO[bytes], size: int) -> bytes:
    parts = []
    while size > 0:
        part = fh.read(size)
        if not part:
            raise DataError("npz: an array member ends early")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


class _RowStream:
    """Rows of one .npy member, inflated as they are read (a Fortran-ordered one is read whole:
    its rows are not contiguous in the stream)."""

    def __init__(self, fh: IO[bytes], column: Column, fortran_order: bool) -> None:
        _read_npy_header(fh)
        self.fh = fh
        self.column = column
        self.row_shape = column.shape[1:]
        self.row_bytes = math.prod(self.row_shape) * column.dtype.itemsize
        self.whole: np.ndarray | None = None
        if fortran_order and len(column.shape) > 1:
            data = _read_exactly(fh, math.prod(column.shape) * column.dtype.itemsize)
            self.whole = np.frombuffer(data, dtype=column.dtype).reshape(column.shape, order="F")
        self.position = 0

    def take(self, n: int) -> np.ndarray:
        start, self.position = self.position, self.position + n
        if self.whole is not None:
            return self.whole[start : start + n]
        data = _read_exactly(self.fh, n * self.row_bytes) if self.row_bytes else b""
        return np.frombuffer(data, dtype=self.column.dtype).reshape((n, *self.row_shape))


class NpzFile(TensorFile):
    format = UploadFormat.NPZ

    def __init__(self, blob: bytes) -> None:
        # BytesIO over bytes shares the buffer (no copy until written, and it is never written).
        self._archive = zipfile.ZipFile(io.BytesIO(blob))
        self._members: dict[str, _Member] = {}
        self.columns = {}
        for info in self._archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name in self._members:
                raise DataError(f"npz: the array {name!r} appears twice")
            with self._archive.open(info) as fh:
                shape, fortran, dtype = _read_npy_header(fh)
            self._members[name] = _Member(info, fortran)
            self.columns[name] = Column(name, dtype, shape)

    def read(self, name: str) -> np.ndarray:
        with self._archive.open(self._members[name].info) as fh:
            return np.asarray(npy_format.read_array(fh, allow_pickle=False))

    def chunks(self, names: Sequence[str], n_rows: int, chunk_rows: int) -> Iterator[tuple[int, Chunk]]:
        with ExitStack() as stack:
            streams = {}
            for name in names:
                member = self._members[name]
                fh = stack.enter_context(self._archive.open(member.info))
                streams[name] = _RowStream(fh, self.columns[name], member.fortran_order)
            for start in range(0, n_rows, chunk_rows):
                n = min(chunk_rows, n_rows - start)
                yield start, {name: stream.take(n) for name, stream in streams.items()}
