"""Shards: up to ``shard_samples`` consecutive samples of a version, one safetensors blob each.

Blobs are content-addressed (``dataset-shards/{sha[:2]}/{sha}``): a shard an erasure leaves
untouched keeps its key, so the new version reuses it without a byte written, and only the
shards holding erased samples are written anew. A shard holds the data tensors only; sample and
subject ids live in the index (the database), so a blob says nothing about whose samples it holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as tensors_from_safetensors
from safetensors.torch import save as safetensors_bytes

from service.datasets.records import gone
from service.storage import ArtifactStore
from unlearning.errors import DataError
from unlearning.samples import TensorDict

SHARD_KIND = "dataset-shards"


@dataclass(frozen=True)
class StoredShard:
    shard: int
    key: str
    sha256: str
    size_bytes: int
    n_samples: int


def encode(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of a shard; the same tensors always give the same bytes (and key)."""
    return safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def put(storage: ArtifactStore, shard: int, tensors: Mapping[str, torch.Tensor]) -> StoredShard:
    blob = encode(tensors)
    stored = storage.put_bytes(blob, kind=SHARD_KIND)
    n = int(next(iter(tensors.values())).shape[0])
    return StoredShard(shard=shard, key=stored.key, sha256=stored.sha256, size_bytes=stored.size, n_samples=n)


def load(storage: ArtifactStore, key: str) -> TensorDict:
    """A shard's tensors; 410 if its blob was deleted (its version was retired and purged)."""
    try:
        blob = storage.read_bytes(key)
    except FileNotFoundError:
        raise gone(f"a shard of this dataset version was deleted ({key})") from None
    try:
        return tensors_from_safetensors(blob)  # safetensors: no pickle
    except Exception as exc:  # our own blob: unreadable means damaged storage
        raise DataError(f"dataset shard {key} is corrupt: {exc}") from None


def column_schema(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Per-sample dtype and shape of each column (stored with a version; an empty read uses it)."""
    return {
        name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape[1:])}
        for name, t in sorted(tensors.items())
    }


def empty(schema: Mapping[str, Any]) -> TensorDict:
    """Zero samples with a version's columns."""
    return {
        name: torch.empty((0, *spec["shape"]), dtype=getattr(torch, spec["dtype"]))
        for name, spec in schema.items()
    }


def data_sha256(shards: Sequence[StoredShard]) -> str:
    """The digest of a version's data: its shard list (number, sha256, samples), in order."""
    listing = [[s.shard, s.sha256, s.n_samples] for s in sorted(shards, key=lambda s: s.shard)]
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
