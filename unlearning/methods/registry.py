"""The method registry: a method is a function of one :class:`RunContext`, registered under a name.

    @register_method("name", params=NameParams, requires_retain=False)
    def unlearn(ctx: RunContext[NameParams]) -> MethodOutcome: ...

It works on ``ctx.model`` (the top-level ``unlearn`` hands it a private copy already on
``ctx.device``), reports progress as fractions of its own work, and returns the new model with its
method-specific report entries. Validation, copying, seeding, before/after metrics and the
finiteness check live in ``unlearning.methods.runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from unlearning.errors import ParamsError
from unlearning.methods.context import MethodOutcome, RunContext
from unlearning.methods.params import MethodParams

P = TypeVar("P", bound=MethodParams)
MethodFn = Callable[[RunContext[Any]], MethodOutcome]


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
    name: str, *, params: type[P], requires_retain: bool = False
) -> Callable[[Callable[[RunContext[P]], MethodOutcome]], Callable[[RunContext[P]], MethodOutcome]]:
    def deco(fn: Callable[[RunContext[P]], MethodOutcome]) -> Callable[[RunContext[P]], MethodOutcome]:
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
