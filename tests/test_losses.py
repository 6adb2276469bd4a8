import math

import pytest
import torch
import torch.nn.functional as F

from vaanet.classes import E6_CLASSES, VE8_CLASSES
from vaanet.losses import PCCELoss, pcce_loss, polarity_vector


def test_polarity_tables_follow_reference_order():
    assert polarity_vector(VE8_CLASSES).tolist() == [0, 1, 0, 0, 1, 0, 1, 1]
    assert polarity_vector(E6_CLASSES).tolist() == [0, 0, 0, 1, 0, 1]


def test_pcce_hand_computed_mixed_batch():
    # VE-8: Anger(0,-) Joy(4,+) Fear(3,-)
    logits = torch.tensor([
        [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # label Anger, predicts Anger: correct
        [0.0, 0.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # label Joy(+), predicts Disgust(-): wrong polarity
        [0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0],  # label Fear(-), predicts Sadness(-): wrong class, same polarity
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0],  # label Anger(-), predicts Trust(+): wrong polarity
    ])
    target = torch.tensor([0, 4, 3, 0])
    lse = [math.log(math.exp(2) + 7), math.log(math.exp(3) + math.exp(1) + 6),
           math.log(math.exp(1) + math.exp(2) + 6), math.log(math.exp(4) + 7)]
    ce = [lse[0] - 2.0, lse[1] - 1.0, lse[2] - 1.0, lse[3] - 0.0]
    lam = 0.5
    expected = (ce[0] + (1 + lam) * ce[1] + ce[2] + (1 + lam) * ce[3]) / 4
    loss = PCCELoss(VE8_CLASSES, lam=lam)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_lambda_zero_is_exactly_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 6), torch.randint(0, 6, (16,))
    assert torch.equal(PCCELoss(E6_CLASSES, lam=0.0)(logits, target), F.cross_entropy(logits, target))


def test_gradient_does_not_flow_through_g():
    logits = torch.tensor([[0.0, 0.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([4])
    pcce_loss(logits, target, polarity_vector(VE8_CLASSES), 2.0).backward()
    ce_grad = torch.autograd.grad(F.cross_entropy(logits, target), logits)[0]
    torch.testing.assert_close(logits.grad, 3.0 * ce_grad)


def test_custom_class_list_and_errors():
    loss = PCCELoss(["Calm", "Angry"], polarity={"Calm": "positive", "Angry": "negative"})
    assert loss.polarity.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"no polarity for classes \['Boredom'\]"):
        PCCELoss(["Joy", "Boredom"])
    with pytest.raises(ValueError, match="covers every class"):
        PCCELoss(["Calm", "Angry"], polarity={"Calm": "positive"})
    with pytest.raises(ValueError, match="'positive' or 'negative'"):
        PCCELoss(["Calm"], polarity={"Calm": "meh"})
    with pytest.raises(ValueError, match="logits have 6 classes"):
        PCCELoss(VE8_CLASSES)(torch.zeros(2, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="lambda"):
        PCCELoss(VE8_CLASSES, lam=-1)
