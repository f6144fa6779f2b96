"""The words a data set and its versions are described with."""

from __future__ import annotations

from enum import StrEnum


class DatasetTask(StrEnum):
    CLASSIFICATION = "classification"
    LANGUAGE_MODELING = "language-modeling"

    @property
    def engine_task(self) -> str:
        """The engine's name of the task (unlearning.types.Task)."""
        return "causal-lm" if self is DatasetTask.LANGUAGE_MODELING else "classification"


class VersionStatus(StrEnum):
    # ready -> retired (an erasure made a successor without some of its samples; its data may
    # still be read until purged) -> purged (its index rows are gone, its shards may be deleted)
    READY = "ready"
    RETIRED = "retired"
    PURGED = "purged"


class VersionSource(StrEnum):
    UPLOAD = "upload"
    ERASURE = "erasure"


class SampleIdKind(StrEnum):
    """How a version's sample ids were given; the index stores both as text."""

    INT = "int"
    STR = "str"


class UploadFormat(StrEnum):
    SAFETENSORS = "safetensors"
    NPZ = "npz"
