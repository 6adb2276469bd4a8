"""Polarity-consistent cross-entropy (PCCE), eq. (13)-(14); the class/polarity tables are :mod:`vaanet.classes`.

    L_PCCE = 1/N sum_i (1 + lambda * g(y_hat_i, y_i)) * CE_i,
    g = 1 if polarity(argmax prediction) != polarity(label) else 0.

g uses the arg-max prediction and carries no gradient; lambda = 0 is exactly cross-entropy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .classes import NEGATIVE, POLARITY, POSITIVE


def polarity_vector(classes: Sequence[str], polarity: Mapping[str, str] | None = None) -> torch.Tensor:
    """1 for positive, 0 for negative, per class index. ``polarity`` maps any other class list."""
    table = POLARITY if polarity is None else polarity
    missing = [c for c in classes if c not in table]
    if missing:
        raise ValueError(
            f"no polarity for classes {missing}; known: {sorted(table)}. Pass a polarity map "
            "{class: 'positive'|'negative'} that covers every class."
        )
    bad = {c: table[c] for c in classes if table[c] not in (POSITIVE, NEGATIVE)}
    if bad:
        raise ValueError(f"polarity must be 'positive' or 'negative', got {bad}")
    return torch.tensor([1 if table[c] == POSITIVE else 0 for c in classes], dtype=torch.long)


def pcce_loss(logits: torch.Tensor, target: torch.Tensor, polarity: torch.Tensor, lam: float) -> torch.Tensor:
    """Functional PCCE. logits [N, C], target [N] (class index), polarity [C] in {0, 1}."""
    ce = F.cross_entropy(logits, target, reduction="none")  # -log p_{i, y_i}    [N]
    pred = logits.detach().argmax(dim=1)  # y_hat, no gradient
    g = (polarity[pred] != polarity[target]).to(ce.dtype)  # eq. 14            [N]
    return ((1.0 + lam * g) * ce).mean()  # eq. 13


class PCCELoss(nn.Module):
    def __init__(self, classes: Sequence[str], lam: float = 0.5, polarity: Mapping[str, str] | None = None):
        super().__init__()
        if lam < 0:
            raise ValueError(f"PCCE lambda must be >= 0, got {lam}")
        self.classes, self.lam = tuple(classes), float(lam)
        self.register_buffer("polarity", polarity_vector(self.classes, polarity), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != len(self.classes):
            raise ValueError(f"logits have {logits.shape[-1]} classes, the loss has {len(self.classes)}: {self.classes}")
        return pcce_loss(logits, target, self.polarity, self.lam)
