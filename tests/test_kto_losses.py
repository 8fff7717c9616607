"""KTO loss (binary feedback): values worked out by hand, then invariants."""

import math

import pytest
import torch

from rlhf.losses import kto_loss, kto_weight_ratio


def t(*xs, grad=False):
    return torch.tensor(xs, dtype=torch.float64, requires_grad=grad)


GOOD_BAD = torch.tensor([True, False])


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_policy_equal_to_reference_gives_half_of_each_weight():
    # r = 0 and z = 0 everywhere: every example's loss is lambda (1 - sigmoid(0)) = lambda / 2;
    # lambda_D = 1 on the two desirable, lambda_U = 1.5 on the one undesirable: mean(0.5, 0.5, 0.75)
    logps = t(-3.0, -7.0, -2.0)
    label = torch.tensor([True, True, False])
    loss, stats = kto_loss(logps, logps, label, t(-4.0, -1.0, -9.0), t(-4.0, -1.0, -9.0),
                           beta=0.1, undesirable_weight=1.5)  # fmt: skip
    assert loss.item() == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert stats["rewards/chosen"] == stats["rewards/rejected"] == stats["kl"] == 0.0
    assert stats["kto/desirable_fraction"] == pytest.approx(2 / 3)
    # with equal weights: exactly 0.5, whatever beta
    loss, _ = kto_loss(logps, logps, label, logps, logps, beta=7.0)
    assert loss.item() == 0.5


def test_kto_by_hand():
    # desirable:   r = -4 - (-6) = 2;  undesirable: r = -5 - (-4) = -1
    # mismatched pairs: log-ratios (-3 - -4, -5 - -5) = (1, 0), z = mean = 0.5
    # beta = 1: desirable   1 - sigmoid(2 - 0.5)    = 1 - sigmoid(1.5) = 0.1824255
    #           undesirable 1 - sigmoid(0.5 - (-1)) = 1 - sigmoid(1.5) = 0.1824255
    # lambda_D = 1, lambda_U = 2: loss = (0.1824255 + 2 * 0.1824255) / 2 = 0.2736383
    loss, stats = kto_loss(t(-4.0, -5.0), t(-6.0, -4.0), GOOD_BAD, t(-3.0, -5.0), t(-4.0, -5.0),
                           beta=1.0, desirable_weight=1.0, undesirable_weight=2.0)  # fmt: skip
    assert loss.item() == pytest.approx(1.5 * (1 - sigmoid(1.5)))
    assert loss.item() == pytest.approx(0.2736383, abs=1e-7)
    assert stats["kl"] == pytest.approx(0.5)
    # rewards are beta * r: 2 and -1, margin 3
    assert (stats["rewards/chosen"], stats["rewards/rejected"], stats["rewards/margin"]) == (2.0, -1.0, 3.0)
    assert (stats["logps/chosen"], stats["logps/rejected"]) == (-4.0, -5.0)


def test_reference_point_is_clamped_at_zero():
    # the mismatched log-ratio is -6 - (-4) = -2 < 0: z = max(0, -2) = 0 (a KL is never negative)
    # beta = 0.5, desirable r = 2: 1 - sigmoid(0.5 * 2) = 1 - sigmoid(1) = 0.2689414
    loss, stats = kto_loss(t(-4.0), t(-6.0), torch.tensor([True]), t(-6.0), t(-4.0), beta=0.5)
    assert stats["kl"] == 0.0
    assert loss.item() == pytest.approx(1 - sigmoid(1.0))


def test_gradient_pushes_desirable_up_undesirable_down_and_not_through_z():
    # at r = z = 0: d/dr [1 - sigmoid(beta (r - z))] = -beta sigmoid(0)(1 - sigmoid(0)) = -beta / 4,
    # / 2 for the batch mean: -0.1 / 8 = -0.0125 for the desirable one, +0.0125 for the undesirable one
    logps = t(-3.0, -3.0, grad=True)
    kl_logps = t(-2.0, -8.0, grad=True)
    loss, _ = kto_loss(logps, t(-3.0, -3.0), GOOD_BAD, kl_logps, t(-2.0, -8.0), beta=0.1)
    loss.backward()
    assert logps.grad.tolist() == pytest.approx([-0.0125, 0.0125])
    # z is a detached reference point (the paper: it gives no gradient)
    assert kl_logps.grad is None or not kl_logps.grad.any()


def test_weights_scale_each_example_and_the_mean_is_over_all():
    # r = z = 0: losses 0.5 each; weights (2, 0): (2 * 0.5 + 0 * 0.5) / 2 = 0.5 (TRL's plain mean)
    logps = t(-1.0, -2.0)
    loss, _ = kto_loss(logps, logps, GOOD_BAD, logps, logps, weights=t(2.0, 0.0))
    assert loss.item() == pytest.approx(0.5)


def test_one_sided_batch_has_nan_rewards_for_the_missing_side():
    logps = t(-1.0, -2.0)
    loss, stats = kto_loss(logps, logps, torch.tensor([True, True]), logps, logps)
    assert loss.item() == 0.5 and stats["rewards/chosen"] == 0.0
    assert math.isnan(stats["rewards/rejected"]) and math.isnan(stats["logps/rejected"])


def test_weight_ratio_advice():
    # 300 desirable, 100 undesirable, lambda_D = 1: 300 / 100 = 3, outside [1, 4/3];
    # lambda_U = 2.5 brings it to 300 / 250 = 1.2, inside
    assert kto_weight_ratio(300, 100) == 3.0
    assert kto_weight_ratio(300, 100, 1.0, 2.5) == pytest.approx(1.2)
    assert kto_weight_ratio(5, 0) == math.inf and math.isnan(kto_weight_ratio(0, 0))
