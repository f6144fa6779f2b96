"""Request shape of ``POST /v1/models/{name}/references``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(
        None, ge=2, le=256, description="how many reference models (default: UNLEARN_REFERENCE_MODELS)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="draws the halves and the references' seeds")
