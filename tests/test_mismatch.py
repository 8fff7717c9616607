"""mismatch: importance weights between sampler and trainer log-probs, worked by hand."""

import math

import pytest
import torch

from rlhf.mismatch import mismatch_weights


def logs(*rows):
    return torch.tensor(rows, dtype=torch.float64).log()


# One response of three tokens, probabilities under trainer and sampler:
#   trainer 0.5, 0.2, 0.9;  sampler 0.25, 0.4, 0.3  ->  ratios 2, 0.5, 3
TRAINER = logs([0.5, 0.2, 0.9])
SAMPLER = logs([0.25, 0.4, 0.3])
ALL = torch.ones(1, 3, dtype=torch.bool)


def test_token_level_truncated_caps_only_the_ratio_above_the_cap():
    # cap 2.5: min(2, 2.5) = 2, min(0.5, 2.5) = 0.5, min(3, 2.5) = 2.5
    weights, stats = mismatch_weights(TRAINER, SAMPLER, ALL, "token", "truncate", cap=2.5)
    torch.testing.assert_close(weights, torch.tensor([[2.0, 0.5, 2.5]], dtype=torch.float64))
    assert stats["mismatch/over_cap_fraction"] == pytest.approx(1 / 3)  # one token of three
    assert stats["mismatch/masked_fraction"] == 0.0  # truncation drops nothing
    assert stats["mismatch/weight_mean"] == pytest.approx(5.0 / 3)  # (2 + 0.5 + 2.5) / 3


def test_token_level_masked_drops_the_token_above_the_cap():
    # cap 2.5: 2 and 0.5 kept as they are, 3 > 2.5 dropped (weight 0)
    weights, stats = mismatch_weights(TRAINER, SAMPLER, ALL, "token", "mask", cap=2.5)
    torch.testing.assert_close(weights, torch.tensor([[2.0, 0.5, 0.0]], dtype=torch.float64))
    assert stats["mismatch/masked_fraction"] == pytest.approx(1 / 3)
    assert stats["mismatch/weight_mean"] == pytest.approx(2.5 / 3)


def test_mismatch_kl_worked_by_hand():
    # tokens drawn by the sampler: KL(sampler || trainer) per token by k3 = r - 1 - log r, r = p_t / p_s
    #   r = 2:   1 - ln 2   = 0.306853
    #   r = 0.5: -0.5 + ln 2 = 0.193147
    #   r = 3:   2 - ln 3   = 0.901388      mean = 1.401388 / 3 = 0.467129
    # k1 = log p_s - log p_t: -ln 2 + ln 2 - ln 3 = -ln 3, mean -0.366204
    # |log r|: ln 2 + ln 2 + ln 3 = 2.484907, mean 0.828302
    _, stats = mismatch_weights(TRAINER, SAMPLER, ALL, cap=2.0)
    assert stats["mismatch/kl"] == pytest.approx((1 - math.log(2) - 0.5 + math.log(2) + 2 - math.log(3)) / 3)
    assert stats["mismatch/kl"] == pytest.approx(0.467129, abs=1e-6)
    assert stats["mismatch/kl_k1"] == pytest.approx(-math.log(3) / 3)
    assert stats["mismatch/abs_logprob_diff"] == pytest.approx((2 * math.log(2) + math.log(3)) / 3)


def test_equal_logprobs_give_unit_weights_and_zero_kl():
    weights, stats = mismatch_weights(TRAINER, TRAINER, ALL, "sequence", "mask", cap=1.5)
    torch.testing.assert_close(weights, torch.ones(1, 3, dtype=torch.float64))
    assert stats["mismatch/kl"] == 0.0 and stats["mismatch/kl_k1"] == 0.0
    assert stats["mismatch/masked_fraction"] == 0.0


# Two responses, the second one token shorter (its last position is padding holding NaN):
#   row 0 ratios 2, 0.5 -> product 1, geometric mean 1
#   row 1 ratios 3 (then padding) -> product 3, geometric mean 3
TRAINER2 = torch.tensor([[0.5, 0.2], [0.9, math.nan]], dtype=torch.float64).log()
SAMPLER2 = torch.tensor([[0.25, 0.4], [0.3, math.inf]], dtype=torch.float64).log()
MASK2 = torch.tensor([[1, 1], [1, 0]])


def test_sequence_level_truncated_is_the_capped_product_on_every_token():
    # cap 2: row 0 min(1, 2) = 1 on both tokens; row 1 min(3, 2) = 2 on its token, 0 on padding
    weights, stats = mismatch_weights(TRAINER2, SAMPLER2, MASK2, "sequence", "truncate", cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64))
    assert stats["mismatch/over_cap_fraction"] == 0.5  # one response of two
    assert stats["mismatch/weight_mean"] == pytest.approx(4.0 / 3)  # (1 + 1 + 2) / 3 valid tokens
    assert all(math.isfinite(v) for v in stats.values())  # the NaN/inf padding never leaks


def test_sequence_level_masked_drops_the_whole_response():
    weights, stats = mismatch_weights(TRAINER2, SAMPLER2, MASK2, "sequence", "mask", cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    assert stats["mismatch/masked_fraction"] == 0.5


def test_geometric_mean_is_length_normalised():
    # a response of two tokens with ratio 1.5 each: product 2.25 > cap 2 is masked, geometric 1.5 kept
    trainer = torch.tensor([[0.6, 0.6]], dtype=torch.float64).log()
    sampler = torch.tensor([[0.4, 0.4]], dtype=torch.float64).log()
    both = torch.ones(1, 2)
    product, _ = mismatch_weights(trainer, sampler, both, "sequence", "mask", cap=2.0)
    geometric, _ = mismatch_weights(trainer, sampler, both, "geometric", "mask", cap=2.0)
    torch.testing.assert_close(product, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(geometric, torch.full((1, 2), 1.5, dtype=torch.float64))


def test_a_long_response_with_a_huge_product_does_not_overflow():
    # 200 tokens of ratio e: the product e^200 overflows float32, the capped weight is exactly the cap
    trainer = torch.zeros(1, 200)
    sampler = torch.full((1, 200), -1.0)
    weights, stats = mismatch_weights(trainer, sampler, torch.ones(1, 200), "sequence", "truncate", cap=3.0)
    torch.testing.assert_close(weights, torch.full((1, 200), 3.0))
    assert stats["mismatch/over_cap_fraction"] == 1.0


def test_weights_carry_no_gradient():
    trainer = TRAINER.clone().requires_grad_()
    weights, _ = mismatch_weights(trainer, SAMPLER, ALL)
    assert not weights.requires_grad


@pytest.mark.parametrize(
    "kwargs, message",
    [({"level": "tokens"}, "level must be one of"), ({"mode": "clip"}, "mode must be one of"),
     ({"cap": 1.0}, "cap must be > 1")],
)  # fmt: skip
def test_bad_arguments_name_what_is_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mismatch_weights(TRAINER, SAMPLER, ALL, **kwargs)
