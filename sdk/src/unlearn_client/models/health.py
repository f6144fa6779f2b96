"""Health and readiness."""

from __future__ import annotations

from pydantic import Field

from unlearn_client.models.base import ApiModel


class Health(ApiModel):
    status: str


class Readiness(ApiModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
