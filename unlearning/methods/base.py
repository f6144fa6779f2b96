"""The method registry and what every method shares.

A method is registered with ``@register_method(name, params=Model, requires_retain=...)`` on a
function with one contract::

    fn(model, forget, params, *, eval, retain, device, seed, progress, should_cancel) -> UnlearnResult

It works on the model it is given (the top-level ``unlearn`` hands it a private copy already on
``device``), reports progress as fractions of its own work, and returns the new model with its
method-specific report entries (epochs_run, n_selected, ...). Validation, copying, seeding,
before/after metrics and the finiteness check live in ``unlearning.methods.unlearn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from unlearning.errors import CancelledError, DivergedError, ParamsError
from unlearning.types import CancelFn, Dataset, ProgressFn, UnlearnResult


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown names are errors, values are range-checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodFn(Protocol):
    def __call__(
        self,
        model: torch.nn.Module,
        forget: Dataset,
        params: Any,
        *,
        eval: Dataset | None,
        retain: Dataset | None,
        device: torch.device,
        seed: int,
        progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> UnlearnResult: ...


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: MethodFn
    params_model: type[MethodParams]
    requires_retain: bool
    description: str

    def parse_params(self, params: dict[str, Any] | MethodParams | None) -> MethodParams:
        """Validate user params; pydantic's message names the offending field."""
        if isinstance(params, self.params_model):
            return params
        if isinstance(params, MethodParams):
            params = params.model_dump()
        if params is not None and not isinstance(params, dict):
            raise ParamsError(f"params for {self.name!r} must be an object, got {type(params).__name__}")
        try:
            return self.params_model.model_validate(params or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
            )
            raise ParamsError(f"invalid params for method {self.name!r}: {problems}") from exc


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, params: type[MethodParams], requires_retain: bool = False
) -> Callable[[MethodFn], MethodFn]:
    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(name, fn, params, requires_retain, doc[0] if doc else "")
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParamsError(f"unknown method {name!r}; known methods: {sorted(_REGISTRY)}") from None


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def check_cancel(should_cancel: CancelFn | None) -> None:
    if should_cancel is not None and should_cancel():
        raise CancelledError("cancelled on request")


def check_finite_loss(loss: torch.Tensor, where: str) -> None:
    # A scalar is read once (this runs every ascent step); isfinite + all + read costs three ops.
    scalar = loss.numel() == 1
    if not (math.isfinite(float(loss.detach())) if scalar else bool(torch.isfinite(loss).all())):
        raise DivergedError(f"loss became {loss.detach()} ({where}); try a smaller lr")


def all_finite(model: torch.nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
