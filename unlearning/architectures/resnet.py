"""CIFAR-style ResNet-18 (He et al. 2016): 3x3 stem without max-pooling, BasicBlocks [2, 2, 2, 2]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearning.architectures.registry import ArchConfig, IOSpec, bounded_int, register_architecture


class ResNet18Config(ArchConfig):
    in_channels: bounded_int(64)  # type: ignore[valid-type]
    num_classes: bounded_int(100_000)  # type: ignore[valid-type]


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _describe(cfg: ResNet18Config) -> IOSpec:
    # The config has no image size: adaptive pooling runs on any H, W (32x32 is the design point),
    # so the spec fixes the channels and marks H and W as free (-1); data validation honours that.
    return IOSpec(input_kind="float", num_classes=cfg.num_classes, input_shape=(cfg.in_channels, -1, -1))


@register_architecture("resnet18", task="classification", config_model=ResNet18Config, describe=_describe)
def build_resnet18(cfg: ResNet18Config) -> ResNet18:
    return ResNet18(cfg.in_channels, cfg.num_classes)
