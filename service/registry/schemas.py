"""Model and version bodies (API.md "Models and versions")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.jsonbody import MAX_NESTING, nesting_depth

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class ArchitectureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A config nested hundreds deep made the engine's model_dump fail (a 500), not a 422.
        if nesting_depth(value) > MAX_NESTING:
            raise ValueError(f"nested more than {MAX_NESTING} levels deep")
        return value


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique per tenant; used in URLs")
    task: Literal["classification", "causal-lm"]
    architecture: ArchitectureIn
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=50)


class ModelOut(BaseModel):
    name: str
    task: str
    architecture: dict[str, Any]
    description: str | None
    tags: list[str]
    latest_version: int | None
    exactness: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class ModelPatch(BaseModel):
    """``PATCH /v1/models/{name}``: settings of a model (absent fields are left as they are)."""

    model_config = ConfigDict(extra="forbid")

    exactness: ExactnessIn | None = Field(
        None, description="retrain exactly after N erasures or T hours; {} turns it off"
    )
    description: str | None = Field(None, max_length=10_000)


class ExactnessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_erasures: int | None = Field(None, ge=1, le=100_000)
    after_hours: float | None = Field(None, gt=0, le=24 * 365)


class EvalSetOut(BaseModel):
    sha256: str
    n_samples: int | None


class TrainingDataOut(BaseModel):
    """The registered training set a version was trained on (or, after an erasure, reflects)."""

    dataset: str
    version: int


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounded like the version column (INTEGER): a larger number was a database error, a 500.
    to_version: int = Field(
        ge=1, le=2**31 - 1, description="the version whose checkpoint becomes the new latest"
    )


class VersionOut(BaseModel):
    version: int
    sha256: str
    size_bytes: int
    parent_version: int | None
    created_by_job: str | None
    status: str
    description: str | None
    eval_set: EvalSetOut | None
    metrics: dict[str, Any] | None
    training_data: TrainingDataOut | None = None
    recipe: dict[str, Any] | None = None
    retired_at: datetime | None = None
    retired_reason: str | None = None
    created_at: datetime
