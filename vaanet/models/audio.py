"""Audio stream backbone: torchvision ResNet-18 over MFCC segments.

Input per segment is an MFCC "image" [1, frames, n_mfcc]; the stem is the reference code's one-channel
Conv2d(1, 64, kernel (7, 1), stride (2, 1)), which downsamples time but keeps every coefficient.
Output is the spatially pooled conv5 map F^{A'} (n' = 512 channels).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class AudioResNet18(nn.Module):
    out_channels = 512

    def __init__(self):
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 1), stride=(2, 1), padding=(3, 0), bias=False)
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 1, frames, n_mfcc] -> F^{A'}: [N, 512]."""
        return self.net(x)
