"""DPO family losses: values worked out by hand."""

import math

import pytest
import torch

from rlhf.losses import dpo_loss

LOG2 = math.log(2.0)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_at_equal_log_ratios_is_log2():
    # policy == reference on both: h = 0, -log sigmoid(0) = log 2
    loss, stats = dpo_loss(t(-5.0, -3.0), t(-7.0, -2.0), t(-5.0, -3.0), t(-7.0, -2.0), beta=0.1)
    assert loss.item() == pytest.approx(LOG2)
    assert stats["rewards/chosen"] == stats["rewards/rejected"] == 0.0


def test_dpo_by_hand():
    # pair: chosen log-ratio -4 - (-6) = 2, rejected log-ratio -5 - (-4) = -1, h = 3, beta = 0.5:
    # beta h = 1.5, loss = log(1 + e^-1.5) = 0.201413; implicit rewards 1.0 and -0.5, margin 1.5
    loss, stats = dpo_loss(t(-4.0), t(-5.0), t(-6.0), t(-4.0), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.5)))
    assert stats["rewards/chosen"] == pytest.approx(1.0) and stats["rewards/rejected"] == pytest.approx(-0.5)
    assert stats["rewards/margin"] == pytest.approx(1.5) and stats["rewards/accuracy"] == 1.0


def test_conservative_dpo_label_smoothing():
    # beta h = 1.5, eps = 0.1: 0.9 * log(1 + e^-1.5) + 0.1 * log(1 + e^1.5) = 0.9*0.201413 + 0.1*1.701413
    loss, _ = dpo_loss(t(-4.0), t(-5.0), t(-6.0), t(-4.0), beta=0.5, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * 0.2014133 + 0.1 * 1.7014133, rel=1e-6)


def test_ipo_by_hand():
    # h = 3, tau = 0.5: (3 - 1/(2*0.5))^2 = (3 - 1)^2 = 4; at h = 0: 1/(4 tau^2) = 1
    loss, _ = dpo_loss(t(-4.0), t(-5.0), t(-6.0), t(-4.0), beta=0.5, loss_type="ipo")
    assert loss.item() == pytest.approx(4.0)
    loss, _ = dpo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=0.5, loss_type="ipo")
    assert loss.item() == pytest.approx(1.0)


def test_weights_and_ties():
    # two pairs, h = 3 and h = 0 (beta = 0.5: beta h = 1.5 and 0); weights 3 and 1:
    # (3 * 0.201413 + 1 * log 2) / 4
    args = (t(-4.0, -1.0), t(-5.0, -1.0), t(-6.0, -1.0), t(-4.0, -1.0))
    loss, _ = dpo_loss(*args, beta=0.5, weights=t(3.0, 1.0))
    assert loss.item() == pytest.approx((3 * math.log1p(math.exp(-1.5)) + LOG2) / 4)
    # a tie has target 1/2: at beta h = 1.5 its loss is 0.5 * (0.201413 + 1.701413) = 0.951413
    loss, stats = dpo_loss(*args, beta=0.5, tie=torch.tensor([True, False]))
    assert loss.item() == pytest.approx((0.5 * (0.2014133 + 1.7014133) + LOG2) / 2, rel=1e-6)
    assert stats["rewards/accuracy"] == 0.0  # only the non-tie pair counts, and its h = 0
    # IPO tie: h regressed to 0: pair 1 (3 - 0)^2 = 9, pair 2 (0 - 1)^2 = 1
    loss, _ = dpo_loss(*args, beta=0.5, loss_type="ipo", tie=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(5.0)


def test_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = t(-4.0).requires_grad_(), t(-5.0).requires_grad_()
    loss, _ = dpo_loss(chosen, rejected, t(-4.0), t(-5.0), beta=0.1)
    loss.backward()
    # d/dx [-log sigmoid(beta (x - y))] at x = y: -beta * sigmoid(0) = -0.05
    assert chosen.grad.item() == pytest.approx(-0.05) and rejected.grad.item() == pytest.approx(0.05)


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="hinge")
