"""rl_math: GAE, whitening, KL estimators and controllers, RLOO / GRPO advantages -- worked by hand."""

import math

import pytest
import torch

from rlhf.rl_math import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    grpo_advantages,
    kl_k1,
    kl_k2,
    kl_k3,
    masked_mean,
    masked_var,
    masked_whiten,
    rloo_advantages,
    shaped_rewards,
)


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_ignores_padding_even_nan():
    # valid: 1, 2, 3 -> 6 / 3 = 2; per row: (1 + 2) / 2 = 1.5 and 3 / 1 = 3
    x = t([1.0, 2.0, math.nan], [3.0, math.inf, 7.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == 2.0
    torch.testing.assert_close(masked_mean(x, mask, dim=1), t(1.5, 3.0))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # empty mask: 0, not 0/0


def test_masked_var_by_hand():
    # valid 1, 2, 3: mean 2, squared deviations 1 + 0 + 1 = 2; unbiased 2 / (3 - 1) = 1, biased 2 / 3
    x = t([1.0, 2.0, 100.0], [3.0, -50.0, 0.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_var(x, mask).item() == pytest.approx(1.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        masked_var(x, torch.tensor([[1, 0, 0], [0, 0, 0]]))  # one valid value has no sample variance


def test_masked_whiten_by_hand():
    # valid 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, unbiased var 5/3,
    # std 1.290994: whitened (-1.5, -0.5, 0.5, 1.5) / 1.290994 = (-1.161895, -0.387298, 0.387298, 1.161895)
    x = t([1.0, 2.0, 100.0], [3.0, 4.0, -7.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = masked_whiten(x, mask)
    torch.testing.assert_close(
        w, t([-1.161895, -0.387298, 0.0], [0.387298, 1.161895, 0.0]), atol=1e-6, rtol=0
    )
    # invalid positions are set to zero; over valid ones mean 0 and (unbiased) variance 1
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-7)
    # shift_mean=False only rescales: the mean 2.5 is added back, the padding stays 0
    unshifted = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(unshifted, torch.where(mask.bool(), w + 2.5, 0.0))


# ---------------------------------------------------------------- GAE


def test_gae_three_steps_by_hand():
    # gamma = 0.9, lam = 0.5, rewards (0, 0, 1), values (0.5, 0.6, 0.7), V after the end = 0:
    # delta_2 = 1 + 0.9 * 0 - 0.7 = 0.3;  delta_1 = 0 + 0.9 * 0.7 - 0.6 = 0.03;  delta_0 = 0.9 * 0.6 - 0.5 = 0.04
    # A_2 = 0.3;  A_1 = 0.03 + 0.45 * 0.3 = 0.165;  A_0 = 0.04 + 0.45 * 0.165 = 0.11425
    # returns = A + V = (0.61425, 0.765, 1.0)
    adv, ret = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7]), torch.ones(1, 3), gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, t([0.11425, 0.165, 0.3]))
    torch.testing.assert_close(ret, t([0.61425, 0.765, 1.0]))


def test_gae_masked_tail_is_zero_and_does_not_leak():
    # row 0: the 3-step example above followed by 2 padded positions with large rewards and values.
    # row 1: 2 valid steps, rewards (0, 1), values (0.5, 0.6): delta_1 = 1 - 0.6 = 0.4,
    #        delta_0 = 0.9 * 0.6 - 0.5 = 0.04; A_1 = 0.4, A_0 = 0.04 + 0.45 * 0.4 = 0.22
    rewards = t([0.0, 0.0, 1.0, 100.0, 100.0], [0.0, 1.0, 100.0, 100.0, 100.0])
    values = t([0.5, 0.6, 0.7, 50.0, 50.0], [0.5, 0.6, 50.0, 50.0, 50.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, t([0.11425, 0.165, 0.3, 0.0, 0.0], [0.22, 0.4, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(ret, t([0.61425, 0.765, 1.0, 0.0, 0.0], [0.72, 1.0, 0.0, 0.0, 0.0]))


def test_gae_gamma_lam_one_gives_reward_to_go():
    # gamma = lam = 1: A_t = sum_{s >= t} r_s - V_t, so A + V is the reward-to-go.
    # by hand: rewards (1, 2, 3) -> reward-to-go (6, 5, 3), whatever the values
    adv, ret = gae(t([1.0, 2.0, 3.0]), t([0.3, -2.0, 9.0]), torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv + t([0.3, -2.0, 9.0]), t([6.0, 5.0, 3.0]))
    torch.testing.assert_close(ret, t([6.0, 5.0, 3.0]))
    # random rows with ragged lengths: reward-to-go over the valid part is a reversed cumsum
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.randn(4, 6, generator=gen)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 4, 1, 3])[:, None]
    adv, ret = gae(rewards, values.double(), mask, gamma=1.0, lam=1.0)
    masked_rewards = torch.where(mask, rewards, 0.0)
    to_go = masked_rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(ret, torch.where(mask, to_go, 0.0))


def test_gae_lam_zero_is_one_step_td_error():
    # lam = 0: A_t = delta_t = r_t + gamma V_{t+1} - V_t, with V_T = 0 at the last valid token.
    # by hand, gamma = 0.5: rewards (1, 0), values (2, 4): A_0 = 1 + 0.5 * 4 - 2 = 1, A_1 = 0 + 0 - 4 = -4
    adv, _ = gae(t([1.0, 0.0]), t([2.0, 4.0]), torch.ones(1, 2), gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv, t([1.0, -4.0]))
    gen = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    adv, _ = gae(rewards, values, torch.ones(3, 5), gamma=0.9, lam=0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros(3, 1)], dim=1)
    torch.testing.assert_close(adv, rewards + 0.9 * next_values - values)


# ---------------------------------------------------------------- KL


def test_kl_estimators_by_hand():
    # logprob -1 vs ref -2: k1 = -1 - (-2) = 1; log r = -2 - (-1) = -1, r = e^-1;
    # k3 = (e^-1 - 1) - (-1) = e^-1 = 0.367879; k2 = 0.5 * (-1)^2 = 0.5
    lp, ref = t([-1.0]), t([-2.0])
    assert kl_k1(lp, ref).item() == 1.0
    assert kl_k3(lp, ref).item() == pytest.approx(math.exp(-1.0)) == pytest.approx(0.367879, abs=1e-6)
    assert kl_k2(lp, ref).item() == 0.5
    # equal log-probs: all three are 0
    same = t([-0.3, -5.0])
    for kl in (kl_k1, kl_k2, kl_k3):
        assert torch.equal(kl(same, same), torch.zeros_like(same))


def test_kl_k3_is_non_negative_and_unbiased():
    gen = torch.Generator().manual_seed(0)
    lp, ref = torch.randn(64, 32, generator=gen) * 3, torch.randn(64, 32, generator=gen) * 3
    assert (kl_k3(lp, ref) >= 0).all() and (kl_k2(lp, ref) >= 0).all()
    # E_{x ~ p}[k3] = E[k1] = KL(p || q): p = N(0, 1) and q = N(1, 1) give KL = 1/2 (mean gap^2 / 2)
    x = torch.randn(200_000, generator=gen, dtype=torch.float64)
    log_p, log_q = -0.5 * x**2, -0.5 * (x - 1) ** 2  # the normalisers cancel
    assert kl_k1(log_p, log_q).mean().item() == pytest.approx(0.5, abs=0.01)
    assert kl_k3(log_p, log_q).mean().item() == pytest.approx(0.5, abs=0.01)


def test_shaped_rewards_by_hand():
    # kl_coef 0.1, k1. Row 0 (3 valid): KL (1, 0, 0) -> rewards (-0.1, 0, 0 + score 2) = (-0.1, 0, 2)
    # row 1 (2 valid): KL (-0.5 + 1, -2 + 1) = (0.5, -1) -> (-0.05, 0.1 + score -1) = (-0.05, -0.9), pad 0
    logprobs = t([-1.0, -1.0, -1.0], [-0.5, -2.0, 9.0])
    ref = t([-2.0, -1.0, -1.0], [-1.0, -1.0, -9.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, stats = shaped_rewards(t(2.0, -1.0), logprobs, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, t([-0.1, 0.0, 2.0], [-0.05, -0.9, 0.0]))
    # summed KL per row (1, -0.5) -> 0.25; non-score (-0.1, 0.05) -> -0.025; rlhf reward (1.9, -0.95) -> 0.475
    assert stats["objective/kl"] == pytest.approx(0.25)
    assert stats["objective/scores"] == pytest.approx(0.5)
    assert stats["objective/non_score_reward"] == pytest.approx(-0.025)
    assert stats["objective/rlhf_reward"] == pytest.approx(0.475)
    # summed over tokens, rewards are score - kl_coef * KL per row
    torch.testing.assert_close(rewards.sum(1), t(2.0 - 0.1, -1.0 + 0.05))
    # k3 on row 0: log r = -1 at t = 0 -> e^-1 = 0.367879, so reward_0 = -0.0367879
    rewards3, _ = shaped_rewards(t(2.0, -1.0), logprobs, ref, mask, kl_coef=0.1, estimator="k3")
    assert rewards3[0, 0].item() == pytest.approx(-0.1 * math.exp(-1.0))
    with pytest.raises(ValueError):
        shaped_rewards(t(2.0, -1.0), logprobs, ref, mask, kl_coef=0.1, estimator="k4")


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # KL 12: error 12/6 - 1 = 1 -> clipped to 0.2; mult = 1 + 0.2 * 256 / 10000 = 1.00512 -> 0.100512
    ctl.update(current_kl=12.0, n_steps=256)
    assert ctl.value == pytest.approx(0.100512)
    # KL 3: error 3/6 - 1 = -0.5 -> -0.2; mult = 0.99488 -> 0.100512 * 0.99488 = 0.0999973786
    ctl.update(current_kl=3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.0999973786)
    # KL 6.6: error 0.1, inside the clip; mult = 1 + 0.1 * 256 / 10000 = 1.00256
    before = ctl.value
    ctl.update(current_kl=6.6, n_steps=256)
    assert ctl.value == pytest.approx(before * 1.00256)
    # state round-trip: a restored controller continues identically
    restored = AdaptiveKLController(init_kl_coef=1.0, target=1.0, horizon=1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.state_dict() == ctl.state_dict()
    ctl.update(20.0, 64)
    restored.update(20.0, 64)
    assert restored.value == ctl.value


def test_fixed_kl_controller_never_changes():
    ctl = FixedKLController(0.05)
    for kl in (0.0, 6.0, 1e6, -3.0):
        ctl.update(kl, 512)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


# ---------------------------------------------------------------- RLOO / GRPO


def test_rloo_by_hand():
    # K = 2: the baseline is the other sample: (3 - 1, 1 - 3, 0 - 5, 5 - 0) = (2, -2, -5, 5)
    adv, stats = rloo_advantages(t(3.0, 1.0, 0.0, 5.0), k=2)
    torch.testing.assert_close(adv, t(2.0, -2.0, -5.0, 5.0))
    assert stats["advantages/mean"] == 0.0
    # K = 3, scores (1, 2, 6): baselines (2 + 6)/2 = 4, (1 + 6)/2 = 3.5, (1 + 2)/2 = 1.5
    # -> (-3, -1.5, 4.5) = 3/2 * (s - 3)
    adv, _ = rloo_advantages(t(1.0, 2.0, 6.0), k=3)
    torch.testing.assert_close(adv, t(-3.0, -1.5, 4.5))
    with pytest.raises(ValueError):
        rloo_advantages(t(1.0, 2.0, 3.0), k=2)


def test_grpo_by_hand():
    # group 0 (1, 2, 3): mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1 -> (-1, 0, 1) / (1 + 1e-4)
    # group 1 (4, 4, 4): std 0 -> advantages 0 (eps keeps it finite)
    adv, stats = grpo_advantages(t(1.0, 2.0, 3.0, 4.0, 4.0, 4.0), k=3)
    torch.testing.assert_close(adv, t(-1.0, 0.0, 1.0, 0.0, 0.0, 0.0) / t(1.0001, 1.0001, 1.0001, 1, 1, 1))
    assert stats["scores/zero_std_frac"] == 0.5
    # population std of group 0 is sqrt(2/3) = 0.816497; group 1 is 0 -> mean 0.408248
    assert stats["scores/group_std"] == pytest.approx(0.408248, abs=1e-6)
    # scale_rewards="none": only centred -- (-1, 0, 1, 0, 0, 0)
    centred, _ = grpo_advantages(t(1.0, 2.0, 3.0, 4.0, 4.0, 4.0), k=3, scale_rewards="none")
    torch.testing.assert_close(centred, t(-1.0, 0.0, 1.0, 0.0, 0.0, 0.0))
    # "batch": the same centring divided by the sample std of all six scores: mean 3, squared deviations
    # 4 + 1 + 0 + 1 + 1 + 1 = 8, / 5 = 1.6, std 1.264911 -> (-1, 0, 1) / (1.264911 + 1e-4)
    batch, _ = grpo_advantages(t(1.0, 2.0, 3.0, 4.0, 4.0, 4.0), k=3, scale_rewards="batch")
    torch.testing.assert_close(batch, t(-1.0, 0.0, 1.0, 0.0, 0.0, 0.0) / (math.sqrt(1.6) + 1e-4))
    with pytest.raises(ValueError, match="scale_rewards must be one of"):
        grpo_advantages(t(1.0, 2.0, 3.0, 4.0), k=2, scale_rewards="std")


# ---------------------------------------------------------------- diagnostics


def test_explained_variance_by_hand():
    # returns (1, 2, 3): unbiased var 1. values (1, 2, 2): residual (0, 0, 1), mean 1/3,
    # squared deviations 1/9 + 1/9 + 4/9 = 2/3, unbiased var 1/3 -> 1 - (1/3) / 1 = 2/3
    mask = torch.tensor([[1, 1, 1, 0]])
    returns = t([1.0, 2.0, 3.0, 50.0])
    assert explained_variance(t([1.0, 2.0, 2.0, -9.0]), returns, mask) == pytest.approx(2 / 3)
    assert explained_variance(returns, returns, mask) == 1.0  # a perfect critic
    assert explained_variance(torch.full_like(returns, 7.0), returns, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(returns, torch.ones_like(returns), mask))  # returns do not vary


def test_lagrange_multiplier_dual_ascent_by_hand():
    from rlhf.rl_math import LagrangeMultiplier

    lam = LagrangeMultiplier(init=0.5, threshold=0.1, lr=2.0)
    lam.update(0.3)  # cost above the threshold: 0.5 + 2 * (0.3 - 0.1) = 0.9
    assert lam.value == pytest.approx(0.9)
    lam.update(0.0)  # constraint holds: 0.9 + 2 * (0.0 - 0.1) = 0.7
    assert lam.value == pytest.approx(0.7)
    lam.update(-1.0)  # far below: projected to 0, never negative
    assert lam.value == 0.0
    restored = LagrangeMultiplier(0.0, 0.0, 1.0)
    restored.load_state_dict(lam.state_dict())
    assert restored.state_dict() == {"value": 0.0, "threshold": 0.1, "lr": 2.0}
