"""Visual spatial attention, eq. (2)-(3).

    H_i^S = W^{S1} (W^{S2} F_i^T)^T,   A_i^S = Softmax(H_i^S),   F_i^S = A_i^S (x) F_i

F_i in R^{m x n} is super-frame i (m = h*w positions, n channels); W^{S2} in R^{1 x n} is the 1x1
convolution, W^{S1} in R^{m x m} the fully connected layer.

``style="paper"`` (default) is the equations: two bias-free linear maps and a softmax, so A_i^S is a
distribution over the m positions. When the block weights the features (eq. 3) it uses ``gain`` x A_i^S
with gain = m, i.e. F_i^S = (m A_i^S) (x) F_i: uniform attention leaves F_i unchanged, as in the
reference code's x m. Why: the literal product scales F_i by 1/m; followed by channel attention (1/n)
and average pooling (eq. 7) the embedding is ~1/(m n) of the features. Measured at initialisation
(benchmarks/attention_recovery.py --diagnose, synth_quick network, m = 9, n = 128, VS+VCW+VT):
mean |G^C| 4.9e-4 literal vs 0.56 with the gain (= |F|, = average pooling), mean |dL/d backbone|
2.0e-5 vs 6.1e-2; see docs/attention.md. A network trained from scratch barely moves without it. The gain is a constant, so A_i^S
and every equation are unchanged up to that factor.
``init`` (model.spatial_init, paper styles): "random" (default: nn.Linear's initialisation of W^{S2}, W^{S1})
or "saliency": W^{S2} = tau/n (stored as 1, used x tau/n, so Adam moves it ~lr relative per step) and
W^{S1} = I, so A_i^S starts at Softmax(tau x mean activation of position i), tau = SALIENCY_SCALE = 3.
Why (issue #12 round 3, docs/attention.md): a trained VS backbone is twice as active inside the evidence box
(mean activation 1.01 vs 0.52), and Softmax(3 x mean activation) would put 2.37x uniform mass on the box in
the key segments, yet the learnt attention (random W^{S1} mixes all positions' scores) reached 1.24x.
With "saliency" VS's validation figure rose from 1.20 to 1.65x uniform, but the full model's validation
accuracy fell from 0.875 to 0.646, so it is off by default and in configs/synth_quick.yaml; it is the start of
``benchmarks/attention_recovery.py --preset spatial``, where VS localises the box.
``style="paper_literal"``: the equations with no gain (the behaviour the gain fixes; for diagnosis).
``style="reference"`` is the public code: the 1x1 convolution is followed by
BatchNorm and tanh, W^{S1} has a bias, and the softmax output is multiplied by m (mean weight 1).
"""
from __future__ import annotations

import torch
from torch import nn


SPATIAL_INITS = ("random", "saliency")
SALIENCY_SCALE = 3.0  # tau of init="saliency": A_i^S starts at Softmax(tau x mean activation of position i)


class SpatialAttention(nn.Module):
    def __init__(self, channels: int, positions: int, style: str = "paper", init: str = "random"):
        super().__init__()
        if init not in SPATIAL_INITS:
            raise ValueError(f"spatial attention init must be one of {SPATIAL_INITS}, got {init!r}")
        self.style = style
        self.positions = positions
        if style in ("paper", "paper_literal"):
            self.W_S2 = nn.Linear(channels, 1, bias=False)  # 1x1 conv, R^{1 x n}
            self.squash = nn.Identity()
            self.W_S1 = nn.Linear(positions, positions, bias=False)  # R^{m x m}
        elif style == "reference":
            self.W_S2 = nn.Linear(channels, 1, bias=False)  # a bias before BN is a no-op
            self.squash = nn.Sequential(nn.BatchNorm1d(1), nn.Tanh())
            self.W_S1 = nn.Linear(positions, positions)
        else:
            raise ValueError(f"attention_style must be 'paper', 'paper_literal' or 'reference', got {style!r}")
        self.score_scale = 1.0
        if init == "saliency":  # W^{S2} = tau / n (stored as 1, used x tau / n), W^{S1} = I: see the module docstring
            with torch.no_grad():
                self.W_S2.weight.fill_(1.0)
                self.W_S1.weight.copy_(torch.eye(positions))
                if self.W_S1.bias is not None:
                    self.W_S1.bias.zero_()
            self.score_scale = SALIENCY_SCALE / channels

    @property
    def scale(self) -> float:
        """Sum of the weights over positions: 1 (paper) or m (reference)."""
        return float(self.positions) if self.style == "reference" else 1.0

    @property
    def gain(self) -> float:
        """Factor applied to A^S when weighting the features (eq. 3): m (paper), 1 (literal, reference)."""
        return float(self.positions) if self.style == "paper" else 1.0

    def forward(self, F: torch.Tensor) -> torch.Tensor:
        """F: [B, t, m, n] -> A^S: [B, t, m]."""
        B, t, m, _ = F.shape
        s = self.W_S2(F).reshape(B * t, 1, m)  # W^{S2} F_i^T        [B*t, 1, m]
        if self.score_scale != 1.0:
            s = s * self.score_scale
        H = self.W_S1(self.squash(s)).reshape(B, t, m)  # H_i^S    [B, t, m]
        return torch.softmax(H, dim=-1) * self.scale  # A_i^S       [B, t, m]
