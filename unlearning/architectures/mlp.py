"""Multi-layer perceptron on flat float features."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from unlearning.architectures.registry import ArchConfig, IOSpec, bounded_int, register_architecture


class MLPConfig(ArchConfig):
    # bounded_int builds an Annotated type at run time, which mypy cannot read as a type.
    input_dim: bounded_int(1 << 16)  # type: ignore[valid-type]
    hidden_dims: list[bounded_int(1 << 16)] = Field(max_length=32)  # type: ignore[valid-type]
    num_classes: bounded_int(100_000)  # type: ignore[valid-type]


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden_dims: list[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _describe(cfg: MLPConfig) -> IOSpec:
    return IOSpec(input_kind="float", num_classes=cfg.num_classes, input_shape=(cfg.input_dim,))


@register_architecture("mlp", task="classification", config_model=MLPConfig, describe=_describe)
def build_mlp(cfg: MLPConfig) -> MLP:
    return MLP(cfg.input_dim, list(cfg.hidden_dims), cfg.num_classes)
