"""Sampler/trainer mismatch: measure it, and correct the policy gradient for it by importance sampling.

When another engine samples the responses (vLLM) and the trainer computes their log-probs, the two
disagree on the same tokens: other kernels, another precision, batch-dependent reductions, weights a
sync behind. The rollout is then slightly off-policy for the trainer, and left alone this bias grows
into collapse on long runs (Yao et al. 2025, "Your efficient RL framework secretly brings you
off-policy RL training"). The correction reweights each token's (or sequence's) loss term by
pi_trainer(y) / pi_sampler(y), capped so that one rare token cannot dominate the batch:

- truncated IS (TIS, Yao et al. 2025; Ionides 2008): w = min(ratio, cap);
- masked IS (MIS, Liu et al. 2025, "When speed kills stability"; verl's `rollout_is` "mask" mode):
  w = ratio where ratio <= cap, else 0: the token or sequence is dropped from the gradient.

At the token level the ratio is per token; at the sequence level it is the product over the response
(the exact ratio of the sequence's probabilities); "geometric" takes the geometric mean of the token
ratios (length-normalised, GSPO's form, Zheng et al. 2025), which does not explode with length.

Shapes: B responses, T response tokens; ``mask`` (B, T) marks real tokens. Log-probs are of the sampled
tokens, under the same temperature. The weights carry no gradient: they correct the sampling
distribution and are not trained. This module imports only torch.
"""

from __future__ import annotations

import math

import torch

from rlhf.rl_math import kl_k1, kl_k3, masked_mean

Stats = dict[str, float]
LEVELS = ("token", "sequence", "geometric")
MODES = ("truncate", "mask")


@torch.no_grad()
def mismatch_weights(
    trainer_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    mask: torch.Tensor,
    level: str = "token",
    mode: str = "truncate",
    cap: float = 2.0,
) -> tuple[torch.Tensor, Stats]:
    """Importance weights pi_trainer / pi_sampler of sampled tokens, truncated or masked at `cap`.

    Args:
        trainer_logprobs: (B, T) log pi_trainer(y_t) under the policy the update starts from (detached).
        sampler_logprobs: (B, T) log pi_sampler(y_t) as the sampling engine reported them.
        mask:             (B, T) valid response tokens; padding may hold anything (NaN, inf).
        level:            "token" (a ratio per token), "sequence" (the product over the response) or
                          "geometric" (the geometric mean of the token ratios, one per response).
        mode:             "truncate" (w = min(ratio, cap)) or "mask" (w = ratio if ratio <= cap else 0).
        cap:              the largest weight, > 1.

    Returns weights (B, T), 0 at padding, to multiply each token's policy-loss term with, and stats:
    ``mismatch/kl`` the k3 estimate of KL(pi_sampler || pi_trainer) per token (the tokens are the
    sampler's draws, so this is the divergence the correction pays for; 0 when the engines agree),
    ``mismatch/kl_k1`` its k1 estimate (unbiased, may be negative), ``mismatch/abs_logprob_diff`` the
    mean |log pi_trainer - log pi_sampler|, ``mismatch/over_cap_fraction`` the share of units (tokens at
    the token level, responses otherwise) whose ratio exceeds the cap, ``mismatch/masked_fraction`` the
    share the mask mode drops (0 when truncating) and ``mismatch/weight_mean`` over valid tokens.

    Raises ValueError for an unknown level or mode, or cap <= 1.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not cap > 1:
        raise ValueError(f"cap must be > 1 (a cap of 1 or less removes every ratio above it); got {cap}")
    valid = mask.bool()
    zero = torch.zeros_like(trainer_logprobs)
    # where(), not *, so that NaN or inf in padding cannot leak into sums
    log_ratio = torch.where(valid, trainer_logprobs - sampler_logprobs, zero)  # (B, T)
    if level == "token":
        unit_log_ratio, unit_valid = log_ratio, valid  # (B, T)
    else:
        unit_log_ratio = log_ratio.sum(dim=1, keepdim=True)  # (B, 1) log of the product of the ratios
        if level == "geometric":
            unit_log_ratio = unit_log_ratio / valid.sum(dim=1, keepdim=True).clamp_min(1)
        unit_valid = valid.any(dim=1, keepdim=True)  # (B, 1) a response with no token has no ratio
    over = unit_log_ratio > math.log(cap)  # compared in log space: a product of ratios may overflow
    if mode == "truncate":
        unit_weight = torch.exp(unit_log_ratio.clamp_max(math.log(cap)))
    else:
        unit_weight = torch.where(over, torch.zeros_like(unit_log_ratio), torch.exp(unit_log_ratio))
    weights = torch.where(valid, unit_weight.expand_as(log_ratio), zero)  # (B, T)
    over_fraction = float(masked_mean(over.float(), unit_valid))
    stats = {
        "mismatch/kl": float(masked_mean(kl_k3(sampler_logprobs, trainer_logprobs), valid)),
        "mismatch/kl_k1": float(masked_mean(kl_k1(sampler_logprobs, trainer_logprobs), valid)),
        "mismatch/abs_logprob_diff": float(masked_mean(log_ratio.abs(), valid)),
        "mismatch/over_cap_fraction": over_fraction,
        "mismatch/masked_fraction": over_fraction if mode == "mask" else 0.0,
        "mismatch/weight_mean": float(masked_mean(weights, valid)),
    }
    return weights, stats
