"""Reward-model losses: values worked out by hand, then invariants and a naive reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlhf.losses import (
    bradley_terry_loss,
    expected_calibration_error,
    plackett_luce_loss,
    preference_probability,
    ranking_pairs_loss,
)

LOG2 = math.log(2.0)


def t(*xs, dtype=torch.float64):
    return torch.tensor(xs, dtype=dtype)


def bt(d: float) -> float:
    """-log sigmoid(d) = log(1 + e^-d), the Bradley-Terry loss of one pair."""
    return math.log1p(math.exp(-d))


# ---------------------------------------------------------------- Bradley-Terry


def test_bt_equal_scores_is_log2():
    # d = 0: -log sigmoid(0) = -log 0.5 = log 2 = 0.6931
    loss, stats = bradley_terry_loss(t(1.0, -2.0), t(1.0, -2.0))
    assert loss.item() == pytest.approx(LOG2)
    assert stats["loss/bt"] == pytest.approx(LOG2)
    assert stats["reward/accuracy"] == 0.0  # r_c > r_r strictly: equal scores are not correct
    assert stats["reward/margin"] == 0.0


def test_bt_at_d_equal_one():
    # d = 1: log(1 + e^-1) = log(1.36788) = 0.31326
    loss, stats = bradley_terry_loss(t(3.0), t(2.0))
    assert loss.item() == pytest.approx(0.31326, abs=1e-5)
    assert stats["reward/accuracy"] == 1.0 and stats["reward/margin"] == 1.0


def test_bt_margin_shifts_the_difference():
    # d = 3 - 1 = 2, margin 1 -> d - m = 1 -> 0.31326; margin 2 -> 0 -> log 2
    loss, stats = bradley_terry_loss(t(3.0, 3.0), t(1.0, 1.0), margin=t(1.0, 2.0))
    assert loss.item() == pytest.approx((0.31326 + LOG2) / 2, abs=1e-5)
    assert stats["reward/margin"] == 2.0  # the stat is the raw r_c - r_r, without the margin


def test_bt_label_smoothing():
    # eps = 0.1 at d = 1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.9 * 0.31326 + 0.1 * 1.31326 = 0.41326
    loss, _ = bradley_terry_loss(t(1.0), t(0.0), label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.41326, abs=1e-5)
    # eps = 0.5 is symmetric: 0.5 * (log(1 + e^-d) + log(1 + e^d)) is the same for d and -d
    for d in (0.3, 1.0, 4.0):
        plus, _ = bradley_terry_loss(t(d), t(0.0), label_smoothing=0.5)
        minus, _ = bradley_terry_loss(t(-d), t(0.0), label_smoothing=0.5)
        assert plus.item() == pytest.approx(minus.item())
    with pytest.raises(ValueError):
        bradley_terry_loss(t(1.0), t(0.0), label_smoothing=0.7)


def test_bt_tie_is_minimised_at_equal_scores():
    # tie: -0.5 log sigmoid(d) - 0.5 log sigmoid(-d); at d = 0: 0.5 log 2 + 0.5 log 2 = log 2
    tie = torch.tensor([True])
    loss, stats = bradley_terry_loss(t(0.5), t(0.5), tie=tie)
    assert loss.item() == pytest.approx(LOG2)
    # at d = 1: 0.5 * 0.31326 + 0.5 * 1.31326 = 0.81326 > log 2; the margin is not applied to ties
    loss1, _ = bradley_terry_loss(t(1.0), t(0.0), tie=tie, margin=t(5.0))
    assert loss1.item() == pytest.approx(0.81326, abs=1e-5)
    d = torch.linspace(-3, 3, 61, dtype=torch.float64)
    per_pair = [bradley_terry_loss(x[None], t(0.0), tie=tie)[0].item() for x in d]
    assert d[int(np.argmin(per_pair))].item() == pytest.approx(0.0)
    assert math.isnan(stats["reward/accuracy"]) and stats["reward/tie_fraction"] == 1.0


def test_bt_ties_are_left_out_of_accuracy():
    # pair 0 correct (d = 1), pair 1 wrong (d = -1), pair 2 a tie with d = 5: accuracy 1/2, margin 0
    _, stats = bradley_terry_loss(t(1.0, 0.0, 5.0), t(0.0, 1.0, 0.0), tie=torch.tensor([False, False, True]))
    assert stats["reward/accuracy"] == 0.5 and stats["reward/margin"] == 0.0
    assert stats["reward/tie_fraction"] == pytest.approx(1 / 3)


def test_bt_weights():
    # weights (1, 0): the second pair is removed -> loss of d = 1 alone, 0.31326
    chosen, rejected = t(1.0, -5.0), t(0.0, 0.0)
    loss, _ = bradley_terry_loss(chosen, rejected, weights=t(1.0, 0.0))
    assert loss.item() == pytest.approx(0.31326, abs=1e-5)
    # weights (3, 1): (3 * 0.31326 + 1 * log(1 + e^5)) / 4 = (0.93978 + 5.00672) / 4 = 1.48663
    loss, _ = bradley_terry_loss(chosen, rejected, weights=t(3.0, 1.0))
    assert loss.item() == pytest.approx(1.48663, abs=1e-5)


def test_bt_is_stable_and_differentiable():
    chosen = t(100.0, -100.0, 0.0).requires_grad_()
    rejected = t(-100.0, 100.0, 0.0).requires_grad_()
    loss, _ = bradley_terry_loss(chosen, rejected, margin=t(0.0, 1.0, 0.0), label_smoothing=0.1)
    loss.backward()
    # d = 200 -> 0.1 * 200; d = -201 -> 0.9 * 201; d = 0 -> log 2; mean of the three
    assert loss.item() == pytest.approx((0.1 * 200 + 0.9 * 201 + LOG2) / 3, abs=1e-6)
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    # d/dr_c of -log sigmoid(r_c - r_r) is -sigmoid(-d): at d = 0, -0.5
    c, r = t(0.0).requires_grad_(), t(0.0)
    bradley_terry_loss(c, r)[0].backward()
    assert c.grad.item() == pytest.approx(-0.5)


# ---------------------------------------------------------------- Plackett-Luce


def naive_plackett_luce(scores, ranking, mask=None, groups=None):
    """Direct loops: for each position, s_j - log sum of exp over the risk set (from its group's start)."""
    total = []
    for b in range(scores.shape[0]):
        n = int(mask[b].sum()) if mask is not None else scores.shape[1]
        s = [scores[b, ranking[b, j]].item() for j in range(n)]
        g = [int(groups[b, j]) for j in range(n)] if groups is not None else list(range(n))
        nll = 0.0
        for j in range(n):
            start = g.index(g[j])
            nll -= s[j] - math.log(sum(math.exp(x) for x in s[start:]))
        total.append(nll)
    return sum(total) / len(total)


def test_pl_with_two_items_is_bradley_terry():
    scores = t(1.3, 0.2)[None]
    pl, _ = plackett_luce_loss(scores, torch.tensor([[0, 1]]))
    bt_loss, _ = bradley_terry_loss(t(1.3), t(0.2))
    assert pl.item() == pytest.approx(bt_loss.item()) == pytest.approx(bt(1.1))


def test_pl_three_items_by_hand():
    # scores (3, 2, 1) ranked in that order:
    # [log(e^3 + e^2 + e^1) - 3] + [log(e^2 + e^1) - 2] + [1 - 1]
    # = log(1 + e^-1 + e^-2) + log(1 + e^-1) = log(1.50321) + log(1.36788) = 0.40761 + 0.31326 = 0.72087
    loss, stats = plackett_luce_loss(t(3.0, 2.0, 1.0)[None], torch.tensor([[0, 1, 2]]))
    assert loss.item() == pytest.approx(0.40761 + 0.31326, abs=1e-5)
    assert stats["reward/accuracy"] == 1.0  # 3 ordered pairs, all scored in order
    assert stats["reward/margin"] == pytest.approx((1 + 2 + 1) / 3)
    # the same responses shown in another order, ranking pointing at them: the same loss
    shuffled, _ = plackett_luce_loss(t(1.0, 3.0, 2.0)[None], torch.tensor([[1, 2, 0]]))
    assert shuffled.item() == pytest.approx(loss.item())


def test_pl_padding_is_ignored():
    # a K = 2 ranking padded to K = 3 (padding index 0, any score) equals the unpadded loss bt(0.5)
    padded, stats = plackett_luce_loss(
        t(0.7, 0.2, 9.0)[None], torch.tensor([[0, 1, 0]]), mask=torch.tensor([[True, True, False]])
    )
    assert padded.item() == pytest.approx(bt(0.5))
    assert stats["reward/accuracy"] == 1.0  # one pair only


def test_pl_tie_group_breslow_by_hand():
    # scores (3, 2, 1), first two tied (groups 0, 0, 1): both share the denominator over all three:
    # [3 - L] + [2 - L] + [1 - 1] with L = log(e^3 + e^2 + e^1) = 3 + 0.40761 = 3.40761
    # loss = 2 * 3.40761 - 5 = 1.81521
    groups = torch.tensor([[0, 0, 1]])
    loss, _ = plackett_luce_loss(t(3.0, 2.0, 1.0)[None], torch.tensor([[0, 1, 2]]), groups=groups)
    assert loss.item() == pytest.approx(1.81521, abs=1e-5)
    # K = 2, both tied: 2 * log(e^a + e^b) - a - b = -log sigmoid(d) - log sigmoid(-d),
    # twice the BT tie loss: at d = 0 it is 2 log 2
    both, _ = plackett_luce_loss(t(0.4, 0.4)[None], torch.tensor([[1, 0]]), groups=torch.tensor([[0, 0]]))
    assert both.item() == pytest.approx(2 * LOG2)


def test_pl_matches_naive_loops_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    B, K = 16, 5
    scores = torch.randn(B, K, generator=gen, dtype=torch.float64) * 2
    ranking = torch.stack([torch.randperm(K, generator=gen) for _ in range(B)])
    lengths = torch.randint(1, K + 1, (B,), generator=gen)
    mask = torch.arange(K)[None, :] < lengths[:, None]
    # random non-decreasing tie groups: a new group starts at each position with probability 0.6
    groups = torch.cumsum((torch.rand(B, K, generator=gen) < 0.6).long(), dim=1)
    for m, g in ((None, None), (mask, None), (None, groups), (mask, groups)):
        loss, _ = plackett_luce_loss(scores, ranking, mask=m, groups=g)
        assert loss.item() == pytest.approx(naive_plackett_luce(scores, ranking, m, g), rel=1e-10)


def test_pl_weights_and_gradients():
    scores = t(3.0, 2.0, 1.0, 0.0, 0.0, 5.0).reshape(2, 3).requires_grad_()
    ranking = torch.tensor([[0, 1, 2], [0, 1, 2]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # weight 0 on the second prompt: the loss of the first, 0.72087
    loss, _ = plackett_luce_loss(scores, ranking, mask=mask, weights=t(1.0, 0.0))
    assert loss.item() == pytest.approx(0.72087, abs=1e-5)
    loss, _ = plackett_luce_loss(scores, ranking, mask=mask)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[1, 2].item() == 0.0  # the padded item gets no gradient


# ---------------------------------------------------------------- InstructGPT pairs


def test_ranking_pairs_three_items_is_the_mean_of_three_bt_losses():
    # scores (3, 2, 1) ranked in order: pairs (1st, 2nd) d = 1, (1st, 3rd) d = 2, (2nd, 3rd) d = 1
    # (bt(1) + bt(2) + bt(1)) / 3 = (0.31326 + 0.12693 + 0.31326) / 3 = 0.25115
    loss, stats = ranking_pairs_loss(t(3.0, 2.0, 1.0)[None], torch.tensor([[0, 1, 2]]))
    assert loss.item() == pytest.approx((2 * bt(1) + bt(2)) / 3)
    assert loss.item() == pytest.approx(0.25115, abs=1e-5)
    assert stats["reward/accuracy"] == 1.0


def test_ranking_pairs_ties_padding_and_prompt_weights():
    # prompt 0: scores (3, 2, 1), first two tied -> tie pair (3, 2): 0.5 * (bt(1) + bt(-1)) = 0.81326,
    # strict pairs d = 2 and 1: (0.81326 + bt(2) + bt(1)) / 3 = (0.81326 + 0.12693 + 0.31326) / 3 = 0.41782
    # prompt 1: two valid responses, d = -1 (wrong order): bt(-1) = 1.31326 (1/C(2,2) = 1)
    # prompt 2: one valid response, no pairs: weight 0
    scores = t(3.0, 2.0, 1.0, 0.0, 1.0, 7.0, 4.0, 0.0, 0.0).reshape(3, 3)
    ranking = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    groups = torch.tensor([[0, 0, 1], [0, 1, 2], [0, 1, 2]])
    loss, stats = ranking_pairs_loss(scores, ranking, mask=mask, groups=groups)
    p0 = (0.5 * (bt(1) + bt(-1)) + bt(2) + bt(1)) / 3
    assert p0 == pytest.approx(0.41782, abs=1e-5)
    assert loss.item() == pytest.approx((p0 + bt(-1)) / 2)
    assert stats["reward/accuracy"] == pytest.approx(2 / 3)  # 3 strict pairs, 2 in order
    # prompt weights (1, 3, 5): (0.41782 + 3 * 1.31326) / 4; prompt 2 still has no pairs
    weighted, _ = ranking_pairs_loss(scores, ranking, mask=mask, groups=groups, weights=t(1.0, 3.0, 5.0))
    assert weighted.item() == pytest.approx((p0 + 3 * bt(-1)) / 4)


def test_ranking_pairs_with_two_items_is_bt_and_has_gradients():
    scores = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    scores.requires_grad_()
    pairs, _ = ranking_pairs_loss(scores, torch.tensor([[0, 1]] * 8))
    ref, _ = bradley_terry_loss(scores[:, 0], scores[:, 1])
    assert pairs.item() == pytest.approx(ref.item())
    pairs.backward()
    assert torch.isfinite(scores.grad).all()
    # -d/ds_0 of the mean of -log sigmoid(s_0 - s_1) is sigmoid(-(s_0 - s_1)) / B
    expected = -torch.sigmoid(-(scores[:, 0] - scores[:, 1])).detach() / 8
    torch.testing.assert_close(scores.grad[:, 0], expected)


# ---------------------------------------------------------------- calibration


def test_preference_probability():
    # sigmoid(0) = 0.5, sigmoid(log 3) = 3 / 4
    p = preference_probability(t(0.0, math.log(3.0)), t(0.0, 0.0))
    torch.testing.assert_close(p, t(0.5, 0.75))
    torch.testing.assert_close(p, torch.exp(-F.softplus(-t(0.0, math.log(3.0)))))


def test_expected_calibration_error_by_hand():
    # 2 bins: [0, 0.5) holds 0.2, 0.4 (conf 0.3, outcomes 0, 1 -> acc 0.5): 2/4 * |0.5 - 0.3| = 0.1
    #         [0.5, 1] holds 0.6, 0.9 (conf 0.75, outcomes 1, 1 -> acc 1.0): 2/4 * |1 - 0.75| = 0.125
    # ECE = 0.225
    probs, outcomes = [0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1]
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(outcomes), n_bins=2) == (
        pytest.approx(0.225)
    )
    assert expected_calibration_error(np.array(probs), np.array(outcomes), n_bins=2) == pytest.approx(0.225)
    # one bin: |mean outcome - mean prob| = |0.75 - 0.525| = 0.225 as well; p = 1.0 lands in the last bin
    assert expected_calibration_error(np.array(probs), np.array(outcomes), n_bins=1) == pytest.approx(0.225)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([1.5]), np.array([1]))


def test_all_zero_weights_give_zero_loss_not_nan():
    # A bootstrap resample can leave every pair of a small batch out: the batch then contributes nothing.
    chosen = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, torch.zeros(2), weights=torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(chosen.grad, torch.zeros(2))
