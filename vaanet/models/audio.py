"""Audio stream backbone: torchvision ResNet-18 over MFCC segments.

Input per segment is an MFCC "image" [1, frames, n_mfcc]; the stem is the reference code's one-channel
Conv2d(1, 64, kernel (7, 1), stride (2, 1)), which downsamples time but keeps every coefficient.
Output is the spatially pooled conv5 map F^{A'} (n' = 512 channels).

``width`` scales every stage's channels (64, 128, 256, 512), as ``model.width`` does for the visual
3D ResNet: the paper's network is width 1; the CPU demo uses a narrow one (n' = 512 x width).
"""
from __future__ import annotations

import torch
from torch import nn


class AudioResNet18(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        # imported here, not at the top: importing torchvision costs 3-4 s here (it loads torch._dynamo), which every
        # process that only reads a config (a study's driver, the CLI) would pay (benchmarks: python -X importtime)
        from torchvision.models import resnet18
        from torchvision.models.resnet import BasicBlock

        net = resnet18(weights=None)
        planes = [max(1, int(p * width)) for p in (64, 128, 256, 512)]
        net.conv1 = nn.Conv2d(1, planes[0], kernel_size=(7, 1), stride=(2, 1), padding=(3, 0), bias=False)
        if width != 1.0:  # torchvision's own block builder, with scaled planes
            net.bn1 = nn.BatchNorm2d(planes[0])
            net.inplanes = planes[0]
            for i, p in enumerate(planes):
                setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, p, 2, stride=1 if i == 0 else 2))
            for m in net.modules():  # torchvision's initialisation (ResNet.__init__)
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        net.fc = nn.Identity()
        self.net = net
        self.out_channels = planes[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 1, frames, n_mfcc] -> F^{A'}: [N, 512 x width]."""
        return self.net(x)
