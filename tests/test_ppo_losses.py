"""PPO's clipped policy and value losses (appended to rlhf.losses), worked by hand."""

import math

import pytest
import torch

from rlhf.losses import ppo_policy_loss, ppo_value_loss


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    # logprobs == old: ratio 1, both terms -A -> loss = -mean(A) over valid tokens = -(1 - 2 + 4) / 3 = -1
    lp = t([-1.0, -2.0, -0.5], [-3.0, 7.0, 7.0])
    adv = t([1.0, -2.0, 100.0], [4.0, 100.0, 100.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, stats = ppo_policy_loss(lp, lp.clone(), adv, mask)
    assert loss.item() == pytest.approx(-1.0)
    assert stats["loss/policy"] == pytest.approx(-1.0)
    assert stats["policy/clipfrac"] == 0.0 and stats["policy/approx_kl"] == 0.0
    assert stats["policy/ratio_mean"] == 1.0


def test_policy_loss_clipping_by_hand():
    # ratio 1.5 on both tokens, cliprange 0.2:
    #   A = +1: pg_loss1 = -1.5, pg_loss2 = -1 * 1.2 = -1.2 -> max -1.2 (clipped: no gradient)
    #   A = -1: pg_loss1 = +1.5, pg_loss2 = +1.2 -> max 1.5 (the unclipped term, gradient flows)
    # loss = (-1.2 + 1.5) / 2 = 0.15; clipfrac 1/2; approx_kl = 0.5 * log(1.5)^2 = 0.5 * 0.164402 = 0.082201
    old = t([-1.0, -1.0])
    lp = (old + math.log(1.5)).requires_grad_()
    loss, stats = ppo_policy_loss(lp, old, t([1.0, -1.0]), torch.ones(1, 2), cliprange=0.2)
    assert loss.item() == pytest.approx(0.15)
    assert stats["policy/clipfrac"] == 0.5
    assert stats["policy/approx_kl"] == pytest.approx(0.082201, abs=1e-6)
    assert stats["policy/ratio_mean"] == pytest.approx(1.5)
    # d loss / d logprob: token 0 clipped -> 0; token 1: d(-A * ratio)/dlp / 2 = 1.5 / 2 = 0.75
    loss.backward()
    torch.testing.assert_close(lp.grad, t([0.0, 0.75]))


def test_policy_loss_weights_each_token_by_its_importance_weight():
    # the clipping example above, with weights 2 (token 0) and 0.5 (token 1):
    #   terms -1.2 and 1.5 -> (2 * -1.2 + 0.5 * 1.5) / 2 = (-2.4 + 0.75) / 2 = -0.825
    #   gradient: token 0 still clipped -> 0; token 1: 0.5 * 1.5 / 2 = 0.375
    old = t([-1.0, -1.0])
    lp = (old + math.log(1.5)).requires_grad_()
    loss, _ = ppo_policy_loss(lp, old, t([1.0, -1.0]), torch.ones(1, 2), 0.2, weights=t([2.0, 0.5]))
    assert loss.item() == pytest.approx(-0.825)
    loss.backward()
    torch.testing.assert_close(lp.grad, t([0.0, 0.375]))
    # a masked token (weight 0) drops out of the sum but still counts in the mean's denominator,
    # as verl's masked importance sampling does: (-1.2 * 1 + 1.5 * 0) / 2 = -0.6
    loss, _ = ppo_policy_loss(
        old + math.log(1.5), old, t([1.0, -1.0]), torch.ones(1, 2), 0.2, weights=t([1.0, 0.0])
    )
    assert loss.item() == pytest.approx(-0.6)


def test_policy_loss_broadcasts_a_per_response_advantage():
    # RLOO / GRPO give one advantage per response: (B, 1) is the same as repeating it over T
    gen = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    adv = torch.randn(3, 1, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    a, sa = ppo_policy_loss(lp, old, adv, mask)
    b, sb = ppo_policy_loss(lp, old, adv.expand(3, 4), mask)
    assert a.item() == pytest.approx(b.item()) and sa == sb


def test_value_loss_by_hand():
    # cliprange_value 0.2:
    #   v 1.0, old 0.5, R 2.0: v_clipped 0.7; (1 - 2)^2 = 1, (0.7 - 2)^2 = 1.69 -> 1.69 (clipped)
    #   v 0.0, old 0.5, R 0.0: v_clipped 0.3; 0, 0.09 -> 0.09 (clipped)
    #   v 1.0, old 0.5, R 0.0: v_clipped 0.7; 1, 0.49 -> 1 (unclipped)
    #   v 0.6, old 0.5, R 1.0: inside the clip, v_clipped 0.6; both 0.16 -> 0.16 (a tie is not clipped)
    # loss = 0.5 * (1.69 + 0.09 + 1 + 0.16) / 4 = 0.5 * 2.94 / 4 = 0.3675; clipfrac 2/4
    values = torch.tensor([[1.0, 0.0, 1.0, 0.6, 9.0]], dtype=torch.float64, requires_grad=True)
    old, returns = t([0.5, 0.5, 0.5, 0.5, 0.0]), t([2.0, 0.0, 0.0, 1.0, -9.0])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, stats = ppo_value_loss(values, old, returns, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.3675)
    assert stats["loss/value"] == pytest.approx(0.3675)
    assert stats["value/clipfrac"] == 0.5
    # gradient only where the unclipped error counts: d/dv 0.5 * (v - R)^2 / 4 = (v - R) / 4
    # -> token 2: (1 - 0) / 4 = 0.25; token 3: (0.6 - 1) / 4 = -0.1; clipped tokens and padding 0
    loss.backward()
    torch.testing.assert_close(values.grad, t([0.0, 0.0, 0.25, -0.1, 0.0]))


# ---------------------------------------------------------------- aggregation, clip-higher, GSPO


def test_each_aggregation_mode_by_hand():
    from rlhf.losses import aggregate_loss

    # response 0: losses 1, 2, 3 (3 tokens); response 1: loss 6 (1 token; the rest is padding, NaN there)
    loss = t([1.0, 2.0, 3.0], [6.0, float("nan"), float("inf")])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # token-mean: (1 + 2 + 3 + 6) / 4 = 3
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx(3.0)
    # seq-mean-token-mean: mean(6 / 3, 6 / 1) = mean(2, 6) = 4
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(4.0)
    # seq-mean-token-sum: mean(6, 6) = 6
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx(6.0)
    # seq-mean-token-sum-norm with a budget of 4 tokens: (6 + 6) / (2 * 4) = 1.5
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm", max_length=4).item() == pytest.approx(1.5)
    # a response with no valid token (a truncated completion masked out) neither counts nor dilutes
    masked_out = torch.tensor([[1, 1, 1], [0, 0, 0]])
    assert aggregate_loss(loss, masked_out, "seq-mean-token-mean").item() == pytest.approx(2.0)  # 6 / 3
    assert aggregate_loss(loss, torch.zeros(2, 3), "seq-mean-token-mean").item() == 0.0
    with pytest.raises(ValueError, match="max_length"):
        aggregate_loss(loss, mask, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="loss_agg_mode must be one of"):
        aggregate_loss(loss, mask, "mean")


def test_aggregation_weighs_tokens_or_responses():
    # the gradient per token: token-mean gives each of the 4 tokens 1/4; seq-mean-token-mean gives the
    # 3-token response's tokens 1/(2*3) = 1/6 each and the 1-token response's token 1/2
    from rlhf.losses import aggregate_loss

    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    for mode, expected in [("token-mean", [[0.25] * 3, [0.25, 0, 0]]),
                           ("seq-mean-token-mean", [[1 / 6] * 3, [0.5, 0, 0]])]:  # fmt: skip
        loss = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
        aggregate_loss(loss, mask, mode).backward()
        torch.testing.assert_close(loss.grad, t(*expected))


def test_clip_higher_by_hand():
    # ratio 1.25 on a token with A = +1: with eps = 0.2 it is clipped at 1.2 (loss -1.2, no gradient);
    # with eps_high = 0.28 it is inside (loss -1.25, gradient -A * ratio = -1.25). The low side is
    # unchanged: ratio 0.7 with A = -1 is clipped at 0.8 either way (max(0.7, 0.8) = 0.8).
    old = t([-1.0, -1.0])
    lp = (old + t([math.log(1.25), math.log(0.7)])).requires_grad_()
    adv = t([1.0, -1.0])
    symmetric, s1 = ppo_policy_loss(lp, old, adv, torch.ones(1, 2), cliprange=0.2)
    assert symmetric.item() == pytest.approx((-1.2 + 0.8) / 2) and s1["policy/clipfrac"] == 1.0
    higher, s2 = ppo_policy_loss(lp, old, adv, torch.ones(1, 2), cliprange=0.2, cliprange_high=0.28)
    assert higher.item() == pytest.approx((-1.25 + 0.8) / 2) and s2["policy/clipfrac"] == 0.5
    higher.backward()
    torch.testing.assert_close(lp.grad, t([-1.25 / 2, 0.0]))  # d(-A ratio)/d lp = -ratio, / 2 tokens


def test_gspo_sequence_ratio_by_hand():
    from rlhf.losses import sequence_log_ratio

    # response 0: token log-ratios 0.1, 0.3 -> log s = 0.2 on both tokens; response 1: -0.4 (1 token)
    old = t([-1.0, -2.0, -1.0], [-0.5, -1.0, -1.0])
    lp = (old + t([0.1, 0.3, 5.0], [-0.4, 9.0, 9.0])).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    log_s = sequence_log_ratio(lp, old, mask)
    torch.testing.assert_close(log_s.detach()[mask.bool()], t(0.2, 0.2, -0.4))
    # A = (+1, -1) per response, eps 0.5: s0 = e^0.2 = 1.2214 inside the clip; s1 = e^-0.4 = 0.6703
    # inside too. seq-mean-token-mean: (-(1.2214 + 1.2214) / 2 + 0.6703) / 2 = -0.27556
    loss, stats = ppo_policy_loss(lp, old, t([1.0], [-1.0]), mask, cliprange=0.5,
                                  loss_agg_mode="seq-mean-token-mean", importance_sampling_level="sequence")  # fmt: skip
    expected = (-math.exp(0.2) + math.exp(-0.4)) / 2
    assert loss.item() == pytest.approx(expected)
    assert stats["policy/ratio_mean"] == pytest.approx((2 * math.exp(0.2) + math.exp(-0.4)) / 3)
    # each token's gradient is its own log pi's, scaled by s_i: -A * s_i / (|y_i| * B)
    loss.backward()
    torch.testing.assert_close(lp.grad, t([-math.exp(0.2) / 4, -math.exp(0.2) / 4, 0.0],
                                          [math.exp(-0.4) / 2, 0.0, 0.0]))  # fmt: skip
    # clipped at the sequence level: eps 0.1 cuts s0 = 1.22 (A > 0) for both its tokens at once
    _, clipped = ppo_policy_loss(lp.detach(), old, t([1.0], [-1.0]), mask, cliprange=0.1,
                                 importance_sampling_level="sequence")  # fmt: skip
    # tokens: s0 > 1.1 with A > 0 (2 clipped); s1 = 0.67 < 0.9 with A < 0: pg_loss2 = 0.9 > 0.67 (clipped)
    assert clipped["policy/clipfrac"] == 1.0
    with pytest.raises(ValueError, match="importance_sampling_level"):
        ppo_policy_loss(lp, old, t([1.0], [-1.0]), mask, importance_sampling_level="tokens")
