"""Architecture registry: names → (validated config, builder, I/O description).

Built-ins register themselves on import of :mod:`unlearning.architectures`. Third-party
architectures come from the entry-point group ``unlearning.architectures``; they are loaded
lazily, the first time an unknown name is looked up, so a broken plug-in cannot break start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from unlearning.errors import ArchitectureError
from unlearning.types import Task

ENTRY_POINT_GROUP = "unlearning.architectures"

InputKind = Literal["float", "tokens"]
_TASKS: frozenset[str] = frozenset({"classification", "causal-lm"})


def bounded_int(upper: int) -> Any:
    """A strictly positive int (no bools, no strings, no floats) with a sanity cap.

    The cap keeps a JSON config from asking the service for a model that cannot fit anywhere.
    """
    return Annotated[int, Field(strict=True, gt=0, le=upper)]


class ArchConfig(BaseModel):
    """Base for architecture configs: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class IOSpec:
    """What a built model consumes and produces, derived from its config alone (no weights)."""

    input_kind: InputKind
    num_classes: int
    input_shape: tuple[int, ...] | None = None
    max_len: int | None = None
    vocab_size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Carried by every built model as ``model.spec``; data validation and methods read it.

    ``num_classes`` is the number of classes, or the vocabulary size for a causal LM.
    ``input_shape`` is the per-sample shape of float inputs (None for token inputs).
    ``vocab_size`` is set for token inputs (equals ``num_classes`` for a causal LM).
    """

    name: str
    config: dict[str, Any]
    task: Task
    input_kind: InputKind
    input_shape: tuple[int, ...] | None
    num_classes: int
    max_len: int | None
    vocab_size: int | None = None


ConfigT = TypeVar("ConfigT", bound=BaseModel)
Builder = Callable[[Any], nn.Module]
Describe = Callable[[Any], IOSpec]


@dataclass(frozen=True)
class Architecture:
    name: str
    task: Task
    config_model: type[BaseModel]
    builder: Builder
    describe: Describe = field(repr=False)

    def parse_config(self, config: Mapping[str, Any] | None) -> BaseModel:
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ArchitectureError(
                f"config of architecture {self.name!r} must be an object, got {type(config).__name__}"
            )
        try:
            return self.config_model.model_validate(dict(config))
        except ValidationError as exc:
            raise ArchitectureError(_format_validation_error(self.name, exc)) from None

    def spec(self, parsed: BaseModel) -> ModelSpec:
        io = self.describe(parsed)
        return ModelSpec(
            name=self.name,
            config=parsed.model_dump(mode="json"),
            task=self.task,
            input_kind=io.input_kind,
            input_shape=tuple(io.input_shape) if io.input_shape is not None else None,
            num_classes=int(io.num_classes),
            max_len=io.max_len,
            vocab_size=io.vocab_size,
        )


def _format_validation_error(name: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        # Model-level validators have no location; their message names the fields itself.
        problems.append(f"{loc}: {msg}" if loc else msg.removeprefix("Value error, "))
    return f"invalid config for architecture {name!r}: " + "; ".join(problems)


_REGISTRY: dict[str, Architecture] = {}
_LOCK = threading.RLock()


def register_architecture(
    name: str,
    *,
    task: Task,
    config_model: type[BaseModel],
    describe: Describe,
    builder: Builder | None = None,
    replace: bool = False,
) -> Any:
    """Register an architecture; usable as a decorator on the builder or called with ``builder=``.

    ``builder(config)`` receives the validated pydantic config and returns an ``nn.Module`` whose
    last layer is an ``nn.Linear`` named ``head`` and which has ``features(x)`` such that
    ``model(x) == model.head(model.features(x))``. ``describe(config)`` returns an :class:`IOSpec`
    without building anything (the service validates data against it cheaply).
    """
    if task not in _TASKS:
        raise ArchitectureError(f"task must be one of {sorted(_TASKS)}, got {task!r}")

    def _register(fn: Builder) -> Builder:
        with _LOCK:
            if name in _REGISTRY and not replace:
                raise ArchitectureError(f"architecture {name!r} is already registered")
            _REGISTRY[name] = Architecture(name, task, config_model, fn, describe)
        return fn

    if builder is not None:
        return _register(builder)
    return _register


def unregister_architecture(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(name, None)


def _entry_points_named(name: str | None = None) -> list[Any]:
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in eps if name is None or ep.name == name]


def _load_entry_point(name: str) -> Architecture | None:
    for ep in _entry_points_named(name):
        try:
            obj = ep.load()
            # An entry point is either an Architecture, or a callable that registers the
            # architecture itself (via register_architecture) or returns an Architecture.
            result = obj if isinstance(obj, Architecture) else obj()
        except ArchitectureError:
            raise
        except Exception as exc:
            raise ArchitectureError(
                f"architecture {name!r}: entry point {ep.value!r} failed to load: {exc}"
            ) from exc
        with _LOCK:
            if name in _REGISTRY:
                return _REGISTRY[name]
            if isinstance(result, Architecture):
                _REGISTRY[name] = result
                return result
        raise ArchitectureError(
            f"architecture {name!r}: entry point {ep.value!r} neither registered {name!r} "
            "nor returned an Architecture"
        )
    return None


def get_architecture(name: str) -> Architecture:
    if not isinstance(name, str) or not name:
        raise ArchitectureError(f"architecture name must be a non-empty string, got {name!r}")
    with _LOCK:
        arch = _REGISTRY.get(name)
    if arch is None:
        arch = _load_entry_point(name)
    if arch is None:
        raise ArchitectureError(
            f"unknown architecture {name!r}; available: {', '.join(list_architectures())}"
        )
    return arch


def list_architectures() -> list[str]:
    """Registered names plus names offered by (not yet loaded) entry points."""
    with _LOCK:
        names = set(_REGISTRY)
    names.update(ep.name for ep in _entry_points_named())
    return sorted(names)


def _split_spec(spec: Any) -> tuple[str, Mapping[str, Any] | None]:
    if isinstance(spec, ModelSpec):
        return spec.name, spec.config
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "config"}
        if unknown:
            raise ArchitectureError(
                f"architecture spec has unknown keys {sorted(unknown)}; expected 'name' and 'config'"
            )
        if "name" not in spec:
            raise ArchitectureError("architecture spec needs a 'name'")
        return spec["name"], spec.get("config")
    raise ArchitectureError(
        f"architecture spec must be a mapping {{'name', 'config'}} or a ModelSpec, got {type(spec).__name__}"
    )


def architecture_spec(spec: Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """Validate ``{"name", "config"}`` and describe the model without building it."""
    name, config = _split_spec(spec)
    arch = get_architecture(name)
    return arch.spec(arch.parse_config(config))


def build_model(
    spec: Mapping[str, Any] | ModelSpec, *, device: torch.device | str | None = None
) -> nn.Module:
    """Build a freshly initialised model (in eval mode) carrying ``model.spec``.

    Pass ``device="meta"`` to get shapes and dtypes without allocating any memory.
    Initialisation uses the global torch RNG: seed it first for reproducible weights.
    """
    name, config = _split_spec(spec)
    arch = get_architecture(name)
    parsed = arch.parse_config(config)
    model_spec_ = arch.spec(parsed)
    try:
        if device is None:
            model = arch.builder(parsed)
        else:
            with torch.device(device):
                model = arch.builder(parsed)
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"architecture {name!r} failed to build: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ArchitectureError(
            f"builder of architecture {name!r} returned {type(model).__name__}, not an nn.Module"
        )
    # Plain attribute (not a submodule, parameter or buffer), where nn.Module.__setattr__ would put it
    # too; written directly because nn.Module types attribute values as tensors or modules.
    model.__dict__["spec"] = model_spec_
    return model.eval()


def model_spec(model: nn.Module) -> ModelSpec:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise ArchitectureError(
            f"{type(model).__name__} has no ModelSpec in .spec; build models with build_model()"
        )
    return spec
