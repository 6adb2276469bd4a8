"""Visual channel-wise attention, eq. (4)-(6).

    G_i = F_i^T in R^{n x m},   H_i^C = W^{C1} (W^{C2} G_i^T)^T,   A_i^C = Softmax(H_i^C),
    G_i^C = A_i^C (x) G_i

W^{C2} in R^{1 x m} pools the m positions of each channel with learned weights, W^{C1} in R^{n x n}
mixes channels; A_i^C is a distribution over the n channels.

``style="paper"`` (default): the equations, bias-free, softmax; A_i^C is a distribution over the n
channels. When the block weights the features (eq. 6) it uses gain x A_i^C with gain = n, i.e.
G_i^C = (n A_i^C) (x) F_i^S, so uniform attention leaves the features unchanged (the reference code's
x n). Without it the literal product scales the features by 1/n (n = 128 in the synth_quick network,
512-2048 in the paper's); see spatial.py and docs/attention.md for the measurement.
``style="paper_literal"``: the equations with no gain (for diagnosis).
``style="reference"``: the public code: the position pooling (a convolution over the m positions)
is followed by BatchNorm and tanh, W^{C1} has a bias, and the softmax output is
multiplied by n (mean weight 1).
"""
from __future__ import annotations

import torch
from torch import nn



class ChannelAttention(nn.Module):
    def __init__(self, channels: int, positions: int, style: str = "paper"):
        super().__init__()
        self.style = style
        self.channels = channels
        if style in ("paper", "paper_literal"):
            self.W_C2 = nn.Linear(positions, 1, bias=False)  # R^{1 x m}
            self.squash = nn.Identity()
            self.W_C1 = nn.Linear(channels, channels, bias=False)  # R^{n x n}
        elif style == "reference":
            self.W_C2 = nn.Linear(positions, 1, bias=False)  # a bias before BN is a no-op
            self.squash = nn.Sequential(nn.BatchNorm1d(1), nn.Tanh())
            self.W_C1 = nn.Linear(channels, channels)
        else:
            raise ValueError(f"attention_style must be 'paper', 'paper_literal' or 'reference', got {style!r}")

    @property
    def scale(self) -> float:
        """Sum of the weights over channels: 1 (paper) or n (reference)."""
        return float(self.channels) if self.style == "reference" else 1.0

    @property
    def gain(self) -> float:
        """Factor applied to A^C when weighting the features (eq. 6): n (paper), 1 (literal, reference)."""
        return float(self.channels) if self.style == "paper" else 1.0

    def forward(self, F: torch.Tensor) -> torch.Tensor:
        """F (spatially attended): [B, t, m, n] -> A^C: [B, t, n]."""
        B, t, _, n = F.shape
        G = F.transpose(-1, -2)  # G_i = F_i^T                    [B, t, n, m]
        s = self.W_C2(G).reshape(B * t, 1, n)  # W^{C2} G_i^T        [B*t, 1, n]
        H = self.W_C1(self.squash(s)).reshape(B, t, n)  # H_i^C    [B, t, n]
        return torch.softmax(H, dim=-1) * self.scale  # A_i^C       [B, t, n]
