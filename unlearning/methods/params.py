"""Method parameters: the base every method's params extend, and what runs when a caller gives none."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown names are errors, values are range-checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# What the service and the CLI run beyond a method's own defaults when a caller gives no params.
# Empty: every method's defaults are its recommended setting (imu, ga, npo: the "anchored" preset;
# ``{"preset": "official"}`` gets the paper's recipe back), so ``unlearn(name, ...)`` with no params,
# the CLI and the service run the same thing. Kept as the one place a deployment-wide refinement
# would go.
RECOMMENDED_PARAMS: dict[str, dict[str, Any]] = {}


def recommended_params(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's recommended params refined by the caller's (its defaults: see RECOMMENDED_PARAMS)."""
    return {**RECOMMENDED_PARAMS.get(method, {}), **(params or {})}
