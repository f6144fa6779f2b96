"""LeNet-5-style CNN that also works on tiny images (8x8 sklearn digits).

Both convolutions keep the spatial size on small images (padding 2) so that two 2x2 poolings
still leave at least a 1x1 map; from 20 px on, the second convolution is the classic valid
5x5 one (28 px → 5x5x16 = 400 features, as in LeNet-5).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from unlearning.architectures.registry import ArchConfig, IOSpec, bounded_int, register_architecture

_SMALL_IMAGE = 20


class LeNetConfig(ArchConfig):
    in_channels: bounded_int(64)  # type: ignore[valid-type]
    # At least 4 px: two 2x2 poolings must leave a 1x1 map.
    image_size: Annotated[int, Field(strict=True, ge=4, le=512)]
    num_classes: bounded_int(100_000)  # type: ignore[valid-type]


def _feature_map_size(image_size: int) -> tuple[int, int]:
    """(padding of conv2, side of the final feature map)."""
    pad2 = 2 if image_size < _SMALL_IMAGE else 0
    side = image_size // 2
    side = side if pad2 else side - 4
    return pad2, side // 2


class LeNet(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        pad2, side = _feature_map_size(image_size)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
        )
        self.head = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _describe(cfg: LeNetConfig) -> IOSpec:
    return IOSpec(
        input_kind="float",
        num_classes=cfg.num_classes,
        input_shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
    )


@register_architecture("lenet", task="classification", config_model=LeNetConfig, describe=_describe)
def build_lenet(cfg: LeNetConfig) -> LeNet:
    return LeNet(cfg.in_channels, cfg.image_size, cfg.num_classes)
