"""Parameters of the weighted gradient-ascent loop (``imu`` and ``ga``), and their presets.

Preset ``{"preset": "adaptive"}`` (the service default): relative steps starting at 0.5% of ‖θ‖ under
the adaptive step schedule (at most 8%, bisection down to 0.25%), no momentum, no L1, early stop
"auto", at most 100 epochs, ``max_eval_drop`` 0.05; any explicit param overrides a preset value.
``{"preset": "official"}`` (the default) is the IMU paper's recipe (see ``methods/imu.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from unlearning.methods.params import MethodParams

PRESETS: dict[str, dict[str, Any]] = {
    "official": {},
    "adaptive": {
        "lr_mode": "relative",
        "lr": 0.005,
        "momentum": 0.0,
        "alpha": 0.0,
        "early_stop": "auto",
        "max_epochs": 100,
        "max_eval_drop": 0.05,
        "step_schedule": "adaptive",
        "max_lr": 0.08,
        "min_lr": 0.0025,
    },
}

# What a model retrained without the class scores on it (0.000 on digits, MLP and LeNet, every class).
CLASS_FORGET_ACCURACY_TARGET = 0.0

# The early-stopping rules once "auto" is resolved (see ``plan.py``).
StopRule = Literal["eval_accuracy", "forget_accuracy", "mia"]


class AscentParams(MethodParams):
    """Parameters of the weighted gradient-ascent loop (shared by ``imu`` and ``ga``)."""

    preset: Literal["official", "adaptive"] = "official"
    target: str | list[str] | None = None  # None = last nn.Linear; "all"; names, module names, globs, regexes
    alpha: float = Field(0.2, ge=0, le=1e3)
    alpha_mode: Literal["sum", "mean"] = "sum"
    lr: float = Field(0.01, gt=0, le=1e3)
    lr_mode: Literal["fixed", "relative"] = "fixed"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    milestones: list[int] = Field(default_factory=lambda: [91, 136])
    gamma: float = Field(0.1, gt=0, le=1)
    early_stop: Literal["auto", "eval_accuracy", "forget_accuracy", "mia"] | None = None
    mia_target: float = Field(0.55, ge=0, le=1)
    # None: CLASS_FORGET_ACCURACY_TARGET with scope "class"; with scope "samples" it has no default
    # (the sound sample-level target is the eval accuracy, i.e. early_stop="eval_accuracy").
    forget_accuracy_target: float | None = Field(None, ge=0, le=1)
    scope: Literal["samples", "class"] = "samples"
    check_every: int | None = Field(None, ge=1)
    max_epochs: int = Field(100, ge=1, le=100_000)
    max_eval_drop: float | None = Field(None, ge=0, le=1)
    cache_features: bool = True
    step_schedule: Literal["constant", "adaptive"] = "constant"
    # Bounds of the adaptive schedule in the units of lr (a fraction of ‖θ‖ when relative); None: 16·lr
    # and lr/2. max_lr below lr counts as lr.
    max_lr: float | None = Field(None, gt=0, le=1e3)
    min_lr: float | None = Field(None, gt=0, le=1e3)
    lr_grow: float = Field(2.0, ge=1, le=100)
    lr_shrink: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        # Preset values are defaults: whatever the caller sets explicitly wins.
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="before")
    @classmethod
    def _class_target(cls, data: Any) -> Any:
        # Filled in here, not at run time, so the resolved params in the report show the target used.
        if (
            isinstance(data, dict)
            and data.get("scope") == "class"
            and data.get("forget_accuracy_target") is None
        ):
            return {**data, "forget_accuracy_target": CLASS_FORGET_ACCURACY_TARGET}
        return data
