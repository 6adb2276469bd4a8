"""Temporal attention over the t segments: visual eq. (7)-(9) and audio eq. (10)-(11).

    H^T = W^{T1} (W^{T2} P^T)^T,   A^T = ReLU(H^T),   E = sum_j p_j A_j^T

P in R^{t x n} holds one feature per segment (visual: spatially pooled super-frames; audio: the
pooled ResNet-18 map F^{A'}). W^{T2} in R^{1 x n} scores each segment, W^{T1} in R^{t x t} mixes
the scores across segments. ReLU, not softmax: the weights are not a distribution.

``style="paper"`` (default): the equations, weighted *sum* over segments. The equations leave
biases and initialisation open (eq. 2-11 write no biases anywhere). Bias-free, a ReLU score dies:
measured on the planted-evidence set (synth_quick network, Adam lr 2e-3), every A_j^T reached 0
within the first epoch (train loss stuck at 2.598, accuracy 0.125 = chance, temporal mass on the key
segments 0.00) because shrinking E^V is the quickest way to shrink the random initial logits, and a
ReLU that is 0 for every segment never gets a gradient again. So W^{T1} has a bias initialised to 1,
as in the reference code, W^{T2} starts at 1/n and W^{T1} at the identity: A_j^T starts at
1 + (mean activation of segment j), and would need hundreds of Adam steps to reach 0 everywhere.
``style="paper_literal"``: identical to "paper" here (eq. 7-11 have no softmax to rescale).
``style="reference"``: the public code: W^{T2}, then BatchNorm and tanh, W^{T1} with its
bias initialised to 1, ReLU, and the weighted features are *averaged* over segments.
"""
from __future__ import annotations

import torch
from torch import nn


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, segments: int, style: str = "paper"):
        super().__init__()
        self.style = style
        self.segments = segments
        if style in ("paper", "paper_literal"):
            self.W_T2 = nn.Linear(channels, 1, bias=False)  # R^{1 x n}
            self.squash = nn.Identity()
            self.W_T1 = nn.Linear(segments, segments)  # R^{t x t}, bias initialised to 1 (see above)
            nn.init.constant_(self.W_T2.weight, 1.0 / channels)
            with torch.no_grad():
                self.W_T1.weight.copy_(torch.eye(segments))
            nn.init.constant_(self.W_T1.bias, 1.0)
        elif style == "reference":
            self.W_T2 = nn.Linear(channels, 1, bias=False)  # a bias before BN is a no-op
            self.squash = nn.Sequential(nn.BatchNorm1d(1), nn.Tanh())
            self.W_T1 = nn.Linear(segments, segments)
            nn.init.constant_(self.W_T1.bias, 1.0)
        else:
            raise ValueError(f"attention_style must be 'paper', 'paper_literal' or 'reference', got {style!r}")

    def forward(self, P: torch.Tensor) -> torch.Tensor:
        """P: [B, t, n] -> A^T: [B, t] (non-negative)."""
        B, t, _ = P.shape
        s = self.W_T2(P).reshape(B, 1, t)  # W^{T2} P^T    [B, 1, t]
        H = self.W_T1(self.squash(s)).reshape(B, t)  # H^T [B, t]
        return torch.relu(H)  # A^T                        [B, t]

    def pool(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """Eq. (9)/(11): E = sum_j p_j A_j (paper) or mean_j p_j A_j (reference). [B,t,n] -> [B,n]."""
        E = (P * A.unsqueeze(-1)).sum(dim=1)
        return E / self.segments if self.style == "reference" else E
