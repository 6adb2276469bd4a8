"""Temporal attention over the t segments: visual eq. (7)-(9) and audio eq. (10)-(11).

    H^T = W^{T1} (W^{T2} P^T)^T,   A^T = ReLU(H^T),   E = sum_j p_j A_j^T

P in R^{t x n} holds one feature per segment (visual: spatially pooled super-frames; audio: the
pooled ResNet-18 map F^{A'}). W^{T2} in R^{1 x n} scores each segment, W^{T1} in R^{t x t} mixes
the scores across segments. ReLU, not softmax: the weights are not a distribution.

``style="paper"`` (default): the equations, weighted *sum* over segments. The equations leave
biases, initialisation and parameterisation open (eq. 2-11 write no biases anywhere). Bias-free and
plainly parameterised, the ReLU score dies: every A_j^T reached 0 within the first epoch on the
planted-evidence set (synth_quick network, Adam lr 2e-3: train loss stuck at 2.598, accuracy 0.125 =
chance, temporal mass on the key segments 0.00). Two causes, two fixes, neither changing eq. 8:
(1) Adam moves each of the n weights of W^{T2} by ~lr per step, so the score W^{T2} p_j moves by
~n * lr * |p| per step (AT, n = 512: ~0.9 per step; A^A was 0 for every segment after 4 steps even
with fix 2). W^{T2} is therefore stored as w / n with w initialised to 1 (an equalised learning rate:
the same function class, W^{T2} = w / n, starting at 1/n); the score then moves by ~lr * |p| per step.
(2) W^{T1} starts at the identity, with a bias initialised to 0: A_j^T starts at the mean activation
of segment j, which is > 0 (P holds averages of post-ReLU features) and, with fix 1, moves slowly, so
the ReLU does not die. The bias was first initialised to 1, as in the reference code; that floor caps
the key share: on the planted-evidence set (issue #12, docs/attention.md) a trained VS+VCW+VT put its
largest A^T on the key segment for 24 of 24 validation videos, yet the key share was 1.45x uniform,
since A_j = ReLU(s_j + b_j), b_j ~ 1 and s_j ~ 0.0-1.1 (without the bias the same scores give 2.2x). With the
bias initialised to 0 (eq. 8 writes no bias; the bias stays learnable) and Adam lr 1e-3 instead of
2e-3, validation temporal mass on the key segments of VS+VCW+VT rose from 1.36 +- 0.04 to 1.92 +- 0.11
x uniform (3 splits, paper style, 10 epochs; one split at 1e-3/2e-3 alone: 1.80 / 1.71 vs 1.42).
With weights near 1 the sum of eq. 9/11 is ~t times average pooling (AT: |logits| 3.6 at the first
step, loss 7-15 in the first steps); so, like the x m and x n of the spatial and channel weights, the
pooling applies a constant gain 1/t: E = (1/t) sum_j p_j A_j^T, average pooling when A^T = 1.
(With the bias at 0, A^T starts at the segments' mean activation: E^V of VS+VCW+VT is 0.068 x average
pooling at initialisation on random pixels, tests/test_attention_recovery.py.)
(3) Optional initialisation of W^{T1}, ``inhibition`` a in [0, 1) (model.temporal_inhibition, the visual temporal
attention; 0 by default, configs/synth_quick.yaml sets 0.75; the audio one always starts at a = 0):
W^{T1} starts at (I - (a/t) 1 1^T) / (1 - a), so A_j^T = ReLU(s_j - a mean_k s_k) / (1 - a): deviations
from the video's mean score are amplified by 1/(1-a), the sum over segments is kept (while no segment
is clipped), and the largest score stays > 0 (scores are >= 0 at the start), so no video's attention dies.
Why (issue #12, docs/attention.md): in trained VS+VCW+VT models W^{T2} and W^{T1} barely move in 10
epochs (w = 1.00 +- 0.01, W^{T1} = I +- 0.03, bias ~0.01), so A^T stays the segments' mean activation;
letting them learn 10x faster made them drift towards *flatter* attention (positive off-diagonals and bias),
not sharper. With a = 0.75 the validation key share of VS+VCW+VT rose from 1.76 +- 0.15 to
3.39 +- 0.34 x uniform and its validation accuracy from 0.375 +- 0.051 to 0.521 +- 0.059 (3 splits, 10 epochs);
without the 1/(1-a) the same inhibition cost accuracy (0.250-0.312). It is an initial value of W^{T1}, which
stays a free t x t matrix (eq. 8).
``style="paper_literal"``: as "paper" but without the 1/t gain (the literal sum of eq. 9/11).
``style="reference"``: the public code: W^{T2}, then BatchNorm and tanh, W^{T1} with its
bias initialised to 1, ReLU, and the weighted features are *averaged* over segments.
"""
from __future__ import annotations

import torch
from torch import nn


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, segments: int, style: str = "paper", inhibition: float = 0.0):
        super().__init__()
        self.style = style
        self.segments = segments
        if style in ("paper", "paper_literal"):
            self.W_T2 = nn.Linear(channels, 1, bias=False)  # R^{1 x n}, times score_scale (see above)
            self.squash = nn.Identity()
            self.W_T1 = nn.Linear(segments, segments)  # R^{t x t}, bias initialised to 0 (see above)
            # W^{T2} = w / n, w initialised to 1: Adam moves w by ~lr per step, the score by ~lr * |p|
            nn.init.constant_(self.W_T2.weight, 1.0)
            self.score_scale = 1.0 / channels
            with torch.no_grad():
                # inhibition a: W^{T1} = (I - (a / t) 1 1^T) / (1 - a), i.e. A_j = ReLU(s_j - a mean_k s_k) / (1 - a):
                # deviations from the video's mean score x 1/(1-a), the sum over segments kept (while none is
                # clipped); with a < 1 the largest score stays > 0 (scores are >= 0 at the start): no video dies
                if not 0.0 <= inhibition < 1.0:
                    raise ValueError(f"temporal inhibition must be in [0, 1), got {inhibition}")
                eye = (torch.eye(segments) - inhibition / segments * torch.ones(segments, segments)) / (1.0 - inhibition)
                self.W_T1.weight.copy_(eye)
            nn.init.zeros_(self.W_T1.bias)  # A_j^T starts at the mean activation of segment j (see above)
        elif style == "reference":
            self.W_T2 = nn.Linear(channels, 1, bias=False)  # a bias before BN is a no-op
            self.squash = nn.Sequential(nn.BatchNorm1d(1), nn.Tanh())
            self.W_T1 = nn.Linear(segments, segments)
            nn.init.constant_(self.W_T1.bias, 1.0)
            self.score_scale = 1.0
        else:
            raise ValueError(f"attention_style must be 'paper', 'paper_literal' or 'reference', got {style!r}")

    def forward(self, P: torch.Tensor) -> torch.Tensor:
        """P: [B, t, n] -> A^T: [B, t] (non-negative)."""
        B, t, _ = P.shape
        s = (self.W_T2(P) * self.score_scale).reshape(B, 1, t)  # W^{T2} P^T    [B, 1, t]
        H = self.W_T1(self.squash(s)).reshape(B, t)  # H^T = W^{T1} (...) + b [B, t]
        return torch.relu(H)  # A^T                        [B, t]

    def pool(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """Eq. (9)/(11): E = sum_j p_j A_j times 1/t (paper, reference; the gain: see above) or 1
        (paper_literal). [B,t,n] -> [B,n]."""
        E = (P * A.unsqueeze(-1)).sum(dim=1)
        return E / self.segments if self.style in ("reference", "paper") else E
