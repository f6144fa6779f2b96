"""Model architectures: a registry of names → builders, the built-ins, and the HF extra.

Every built model carries ``model.spec`` (:class:`ModelSpec`); built-ins end in an ``nn.Linear``
named ``head`` with ``model(x) == model.head(model.features(x))``.
"""

from unlearning.architectures import hf, lenet, mlp, resnet, transformer  # noqa: F401  (register)
from unlearning.architectures.registry import (
    ENTRY_POINT_GROUP,
    ArchConfig,
    Architecture,
    IOSpec,
    ModelSpec,
    architecture_spec,
    bounded_int,
    build_model,
    get_architecture,
    list_architectures,
    model_spec,
    register_architecture,
    unregister_architecture,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArchConfig",
    "Architecture",
    "IOSpec",
    "ModelSpec",
    "architecture_spec",
    "bounded_int",
    "build_model",
    "get_architecture",
    "list_architectures",
    "model_spec",
    "register_architecture",
    "unregister_architecture",
]
