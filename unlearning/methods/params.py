"""Method parameters: the base every method's params extend, and what runs when a caller gives none."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown names are errors, values are range-checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# What the service and the CLI run when a caller gives no params: ``{}`` is each method's paper
# recipe, which does not transfer to small models (see methods/imu.py); callers' params refine
# these (``{"preset": "official"}`` gets the paper's recipe back).
RECOMMENDED_PARAMS: dict[str, dict[str, Any]] = {
    "imu": {"preset": "adaptive"},
    "ga": {"preset": "adaptive"},
}


def recommended_params(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's recommended params refined by the caller's."""
    return {**RECOMMENDED_PARAMS.get(method, {}), **(params or {})}
