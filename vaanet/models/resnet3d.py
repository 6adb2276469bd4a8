"""3D ResNet of Hara, Kataoka and Satoh (CVPR 2018), layout-compatible with 3D-ResNets-PyTorch.

Module and parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...)
match the public checkpoints ``resnet-101-kinetics.pth`` and ``r3d101_K_200ep.pth`` so that their
``state_dict`` loads without renaming (see :mod:`vaanet.models.pretrained`).

Shapes for the paper's input (one snippet of k=16 frames at 112x112, depth 101, width 1):
    [N, 3, 16, 112, 112] -conv1(stride 1,2,2)-> [N, 64, 16, 56, 56] -maxpool-> [N, 64, 8, 28, 28]
    -layer1-> [N, 256, 8, 28, 28] -layer2-> [N, 512, 4, 14, 14] -layer3-> [N, 1024, 2, 7, 7]
    -layer4-> [N, 2048, 1, 4, 4]
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet3D", "resnet3d", "DEPTHS", "block_counts"]


def conv3x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def _shortcut_a(x: torch.Tensor, planes: int, stride: int) -> torch.Tensor:
    """Shortcut A: parameter-free, strided identity with zero-padded extra channels."""
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    pad = out.new_zeros(out.size(0), planes - out.size(1), *out.shape[2:])
    return torch.cat([out, pad], dim=1)


# depth -> (block, blocks per stage)
DEPTHS: dict[int, tuple[type[nn.Module], list[int]]] = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}


def block_counts(depth: int) -> list[int]:
    return list(DEPTHS[depth][1])


class ResNet3D(nn.Module):
    """Hara's 3D ResNet. ``width`` scales every stage's planes (``widen_factor`` in Hara's code)."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        width: float = 1.0,
        shortcut: str = "B",
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
        no_max_pool: bool = False,
        in_channels: int = 3,
        num_classes: int | None = 400,
    ):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        planes = [max(1, int(p * width)) for p in (64, 128, 256, 512)]
        self.in_planes = planes[0]
        self.no_max_pool = no_max_pool
        self.shortcut = shortcut
        self.conv1 = nn.Conv3d(
            in_channels, self.in_planes, kernel_size=(conv1_t_size, 7, 7),
            stride=(conv1_t_stride, 2, 2), padding=(conv1_t_size // 2, 3, 3), bias=False,
        )
        self.bn1 = nn.BatchNorm3d(self.in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.out_channels = planes[3] * block.expansion
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            if self.shortcut == "A":
                downsample = partial(_shortcut_a, planes=planes * block.expansion, stride=stride)
            else:
                downsample = nn.Sequential(
                    conv1x1x1(self.in_planes, planes * block.expansion, stride),
                    nn.BatchNorm3d(planes * block.expansion),
                )
        layers = [block(self.in_planes, planes, stride=stride, downsample=downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv5 feature map: [N, 3, k, H, W] -> [N, n, k', h, w]."""
        x = self.relu(self.bn1(self.conv1(x)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.fc(x) if self.fc is not None else x


def resnet3d(depth: int, **kwargs) -> ResNet3D:
    """Builder: ``resnet3d(101, shortcut="B", num_classes=None)`` is the paper's visual backbone."""
    if depth not in DEPTHS:
        raise ValueError(f"3D ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    block, layers = DEPTHS[depth]
    return ResNet3D(block, layers, **kwargs)
