"""Reward-model losses: pure functions of score tensors, each returning ``(loss, stats)``.

One loss per kind of human answer (the ``label_types`` idea of lm-human-preferences):

- a comparison of two responses -> ``bradley_terry_loss`` (with margins, label smoothing, ties, weights);
- a thumbs up or down on one response -> ``binary_logistic_loss`` (against a learned threshold);
- a full ranking of K responses  -> ``plackett_luce_loss`` (the ranking's likelihood) or
  ``ranking_pairs_loss`` (InstructGPT: every one of the K(K-1)/2 pairs as a comparison);
- calibration of the learned preference -> ``preference_probability`` and ``expected_calibration_error``.

``scores`` are reward-model outputs (one scalar per response). Losses are differentiable scalars; stats
are one flat dict of Python floats with slash keys (``loss/bt``, ``reward/accuracy``, ``reward/margin``).

PPO's clipped losses over response tokens follow: ``ppo_policy_loss`` and ``ppo_value_loss``; then the
policy losses on offline labels: the DPO family (pairs), ``kto_loss`` (binary labels) and ILQL's.
This module imports only torch and the pure ``rlhf.rl_math``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from rlhf.rl_math import masked_mean

Stats = dict[str, float]


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i l_i / sum_i w_i (plain mean when weights is None).

    All-zero weights give 0 with zero gradients, not 0/0: a bootstrap resample of a small batch can
    leave every item out, and that must skip the batch, not stop training as a NaN."""
    if weights is None:
        return losses.mean()
    weights = weights.to(losses.dtype)
    return (weights * losses).sum() / weights.sum().clamp_min(1e-12)


def _mean_or_nan(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else math.nan


# ---------------------------------------------------------------- pairwise comparisons


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    tie: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """Bradley-Terry negative log-likelihood of pairwise preferences (Bradley & Terry 1952).

    Args:
        chosen:   (B,) scores of the preferred responses r_c.
        rejected: (B,) scores of the other responses r_r.
        margin:   (B,) or None. Required score gap m (Llama 2, Touvron et al. 2023, eq. 2: a larger
                  margin for "significantly better" answers); not applied to ties.
        weights:  (B,) or None. Per-pair weights w (e.g. labeller reliability); the loss is the
                  weighted mean sum_i w_i l_i / sum_i w_i, so a zero weight removes a pair.
        label_smoothing: epsilon in [0, 0.5], the probability that a label is flipped (conservative
                  DPO, Mitchell 2023; Christiano et al. 2017 assume a 10% random answer).
        tie:      (B,) bool or None. Pairs the labeller called equally good.

    Per pair, with d = r_c - r_r - m (Ouyang et al. 2022, eq. 1 for one pair)::

        l = -(1 - eps) log sigmoid(d) - eps log sigmoid(-d)          (non-tie pairs)
        l = -0.5 log sigmoid(d0) - 0.5 log sigmoid(-d0), d0 = r_c - r_r  (ties)

    A tie is a comparison with target probability 0.5 -- binary cross-entropy against a soft label,
    the same view as label smoothing. Its loss is minimised at d0 = 0, where it equals log 2, and is
    symmetric in the two responses, so the order of a tied pair does not matter. Rao-Kupper (1967) or
    Davidson (1970) instead add a tie probability with an extra parameter to fit; the soft target needs
    none and leaves the model of strict preferences untouched. A margin says how much better the chosen
    answer is, which a tie does not say, so it is ignored there.

    Stats: ``loss/bt``; over non-tie pairs (unweighted) ``reward/accuracy`` (share with r_c > r_r,
    strictly), ``reward/margin`` (mean r_c - r_r); ``reward/chosen``, ``reward/rejected`` (means over all
    pairs) and ``reward/tie_fraction``. Accuracy and margin are NaN when every pair is a tie.
    """
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    diff = chosen - rejected  # (B,)
    if tie is None:
        tie = torch.zeros_like(diff, dtype=torch.bool)
    d = diff if margin is None else torch.where(tie, diff, diff - margin)  # (B,)
    eps = torch.where(tie, torch.full_like(d, 0.5), torch.full_like(d, label_smoothing))  # (B,)
    # logsigmoid is stable for large |d|, where log(sigmoid(d)) would underflow to log(0)
    losses = -(1.0 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)  # (B,)
    loss = _weighted_mean(losses, weights)
    strict = diff.detach()[~tie]
    stats = {
        "loss/bt": float(loss.detach()),
        "reward/accuracy": _mean_or_nan(strict > 0),
        "reward/margin": _mean_or_nan(strict),
        "reward/chosen": float(chosen.detach().float().mean()),
        "reward/rejected": float(rejected.detach().float().mean()),
        "reward/tie_fraction": float(tie.float().mean()),
    }
    return loss, stats


# ---------------------------------------------------------------- binary labels (thumbs up/down)


def binary_logistic_loss(
    scores: torch.Tensor, label: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, Stats]:
    """Logistic loss of binary labels on centred reward-model scores.

    Args:
        scores:  (B,) r(x, y) - b: the reward minus the learned threshold b between desirable and
                 undesirable (the reward model's `offsets`).
        label:   (B,) bool: True = desirable (thumbs up).
        weights: (B,) or None: per-label weights; weighted mean as in Bradley-Terry.

    With s = +1 for desirable and -1 for undesirable (logistic regression of the label on the score)::

        l = -log sigmoid(s (r - b))

    the Bradley-Terry loss of the response against a virtual response of reward b: P(good) = sigmoid(r - b).
    A comparison only fixes reward differences; a binary label also fixes where b sits, so one model can
    learn from both (the sum of each kind's mean loss). At r = b the loss is log 2.

    Stats: ``loss/binary``; ``reward/binary_accuracy`` (share with sign(r - b) = s, strictly),
    ``reward/desirable`` and ``reward/undesirable`` (mean r - b of each class; NaN when absent).
    """
    label = label.to(torch.bool)
    sign = label.to(scores.dtype) * 2 - 1  # (B,) +1 / -1
    loss = _weighted_mean(-F.logsigmoid(sign * scores), weights)
    detached = scores.detach().float()
    stats = {
        "loss/binary": float(loss.detach()),
        "reward/binary_accuracy": _mean_or_nan(sign * detached > 0),
        "reward/desirable": _mean_or_nan(detached[label]),
        "reward/undesirable": _mean_or_nan(detached[~label]),
    }
    return loss, stats


# ---------------------------------------------------------------- rankings of K responses


def _in_rank_order(
    scores: torch.Tensor, ranking: torch.Tensor, mask: torch.Tensor | None, groups: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores reordered best first, the valid-position mask and tie groups (each position its own group
    when None; padded positions get a group after every real one). All (B, K)."""
    s = scores.gather(1, ranking)  # (B, K)
    if mask is None:
        mask = torch.ones_like(ranking, dtype=torch.bool)
    if groups is None:
        groups = torch.arange(ranking.shape[1], device=ranking.device).expand_as(ranking)
    groups = torch.where(mask, groups, groups.max() + 1)  # padding at the end keeps rows sorted
    return s, mask, groups


def _pair_masks(mask: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """better[b, i, j]: position i is ranked strictly above j; tied[b, i, j]: same group, i < j (each
    tied pair once). Both (B, K, K), only over valid positions."""
    valid = mask[:, :, None] & mask[:, None, :]  # (B, K, K)
    better = valid & (groups[:, :, None] < groups[:, None, :])
    k = mask.shape[1]
    upper = torch.ones(k, k, dtype=torch.bool, device=mask.device).triu(1)  # (K, K) i < j
    tied = valid & (groups[:, :, None] == groups[:, None, :]) & upper
    return better, tied


def _pair_stats(s: torch.Tensor, better: torch.Tensor) -> Stats:
    """Accuracy (share of strictly ordered pairs scored in that order) and mean margin s_i - s_j."""
    gap = (s[:, :, None] - s[:, None, :]).detach()[better]  # (n_pairs,)
    return {"reward/accuracy": _mean_or_nan(gap > 0), "reward/margin": _mean_or_nan(gap)}


def plackett_luce_loss(
    scores: torch.Tensor,
    ranking: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """Negative log-likelihood of rankings under the Plackett-Luce model (Luce 1959; Plackett 1975).

    Args:
        scores:  (B, K) score of each response, in the order the responses were shown.
        ranking: (B, K) long, indices into scores, best first (pi_1, pi_2, ...).
        mask:    (B, K) bool or None, in *ranking order*: which positions of `ranking` are real. Padding
                 for prompts with fewer than K responses goes at the end; its indices may be anything
                 in [0, K).
        weights: (B,) or None. Weighted mean over prompts, sum_b w_b l_b / sum_b w_b.
        groups:  (B, K) long or None, in ranking order: tie-group index of each position,
                 non-decreasing along the valid positions (e.g. 0, 0, 1 = the first two tied).

    Per prompt, with s_j = scores[pi_j] over the n valid positions::

        l = -sum_{j=1..n} [ s_j - logsumexp_{l >= start(j)} s_l ]

    where start(j) = j without ties, so the last position contributes s_n - s_n = 0. Tied items use the
    Breslow (1974) approximation: every member of a group shares the denominator over everything from
    the group's first position on (the risk set), as if each were chosen first among what is left. For
    K = 2 one tie group gives -log sigmoid(d) - log sigmoid(-d): twice the 0.5-target tie loss of
    ``bradley_terry_loss``, minimised at equal scores. The suffix log-sum-exps come from one reversed
    ``logcumsumexp`` (no loop over K). K = 2 without ties is the Bradley-Terry loss.

    Stats: ``loss/pl``; ``reward/accuracy`` and ``reward/margin`` over all strictly ordered pairs of
    positions (pooled over the batch, unweighted).
    """
    s, mask, groups = _in_rank_order(scores, ranking, mask, groups)  # (B, K) each
    # a finite floor instead of -inf keeps logcumsumexp's backward free of NaN at padded positions
    floor = torch.finfo(s.dtype).min
    s_valid = s.masked_fill(~mask, floor)  # (B, K)
    suffix = torch.logcumsumexp(s_valid.flip(1), dim=1).flip(1)  # (B, K) logsumexp_{l >= j} s_l
    start = torch.searchsorted(groups.contiguous(), groups.contiguous())  # (B, K) first index of group
    denominator = suffix.gather(1, start)  # (B, K)
    terms = torch.where(mask, s_valid - denominator, torch.zeros_like(s))  # (B, K)
    loss = _weighted_mean(-terms.sum(dim=1), weights)
    better, _ = _pair_masks(mask, groups)
    return loss, {"loss/pl": float(loss.detach()), **_pair_stats(s, better)}


def ranking_pairs_loss(
    scores: torch.Tensor,
    ranking: torch.Tensor,
    mask: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """InstructGPT's ranking loss: every pair of a ranking as one comparison (Ouyang et al. 2022, eq. 1).

    Args: as ``plackett_luce_loss`` -- scores (B, K); ranking (B, K) long, best first; mask (B, K) bool
    in ranking order; groups (B, K) long tie groups in ranking order; weights (B,).

    Per prompt with n valid responses and C(n, 2) = n(n-1)/2 pairs::

        l = 1/C(n, 2) * [ sum_{i above j} -log sigmoid(s_i - s_j)
                          + sum_{i tied j} -0.5 log sigmoid(s_i - s_j) - 0.5 log sigmoid(s_j - s_i) ]

    Ties take the 0.5 target of ``bradley_terry_loss``. The 1/C(n, 2) average keeps a prompt with many
    responses from dominating (InstructGPT puts all of a prompt's pairs in one batch element to avoid
    overfitting); then a weighted mean over prompts. Prompts with fewer than 2 valid responses have no
    pairs and get weight 0. Built from (B, K, K) "better than" and "tied" masks, no loop over pairs.

    Stats: ``loss/ranking_pairs``; ``reward/accuracy``, ``reward/margin`` over strictly ordered pairs.
    """
    s, mask, groups = _in_rank_order(scores, ranking, mask, groups)  # (B, K)
    better, tied = _pair_masks(mask, groups)  # (B, K, K)
    gap = s[:, :, None] - s[:, None, :]  # (B, K, K) s_i - s_j
    strict = -F.logsigmoid(gap)
    tie = -0.5 * F.logsigmoid(gap) - 0.5 * F.logsigmoid(-gap)
    pair_losses = torch.where(better, strict, torch.where(tied, tie, torch.zeros_like(gap)))  # (B, K, K)
    n_pairs = (better | tied).sum(dim=(1, 2))  # (B,) = C(n, 2)
    per_prompt = pair_losses.sum(dim=(1, 2)) / n_pairs.clamp_min(1)  # (B,)
    w = torch.ones_like(per_prompt) if weights is None else weights.to(per_prompt.dtype)
    loss = _weighted_mean(per_prompt, w * (n_pairs > 0))
    return loss, {"loss/ranking_pairs": float(loss.detach()), **_pair_stats(s, better)}


# ---------------------------------------------------------------- calibration


def preference_probability(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """The Bradley-Terry probability that `chosen` is preferred: sigmoid(r_c - r_r). (B,), (B,) -> (B,)."""
    return torch.sigmoid(chosen - rejected)


def expected_calibration_error(probs: Any, outcomes: Any, n_bins: int = 10) -> float:
    """Expected calibration error of predicted probabilities (Naeini et al. 2015; Guo et al. 2017, eq. 3).

    probs (N,) in [0, 1] and outcomes (N,) in {0, 1}, torch tensors or numpy arrays. With equal-width
    bins B_b over [0, 1] (the last one closed; p = 1 falls in it)::

        ECE = sum_b |B_b| / N * |acc_b - conf_b|

    where acc_b is the mean outcome and conf_b the mean probability in bin b. Since |B_b| * acc_b is the
    bin's outcome sum, this is sum_b |sum_{B_b} y - sum_{B_b} p| / N, which needs no per-bin division.
    """
    p = torch.as_tensor(probs).detach().to(torch.float64).flatten()  # (N,)
    y = torch.as_tensor(outcomes).detach().to(torch.float64).flatten()  # (N,)
    if p.numel() == 0 or p.shape != y.shape:
        raise ValueError(f"probs and outcomes must be non-empty and of one shape, got {p.shape}, {y.shape}")
    if n_bins < 1 or ((p < 0) | (p > 1)).any():
        raise ValueError("n_bins must be >= 1 and probs in [0, 1]")
    bins = (p * n_bins).floor().long().clamp(max=n_bins - 1)  # (N,)
    sum_p = torch.bincount(bins, weights=p, minlength=n_bins)  # (n_bins,)
    sum_y = torch.bincount(bins, weights=y, minlength=n_bins)
    return float((sum_y - sum_p).abs().sum() / p.numel())


# ---------------------------------------------------------------- PPO (policy and critic)


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate_loss(
    loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean", max_length: int | None = None
) -> torch.Tensor:
    """A per-token loss (B, T) reduced to a scalar over the valid tokens `mask` (B, T), as verl's
    ``loss_agg_mode`` names the choices::

        token-mean:              sum_{i,t} l_it / sum_{i,t} m_it        every token weighs the same: long
                                                                        responses count more (DAPO, Yu et
                                                                        al. 2025, eq. 8; lm-human-preferences)
        seq-mean-token-mean:     mean_i ( sum_t l_it / sum_t m_it )     every response weighs the same
                                                                        (GRPO, Shao et al. 2024, eq. 3)
        seq-mean-token-sum:      mean_i sum_t l_it                      sum over tokens, mean over responses
        seq-mean-token-sum-norm: sum_{i,t} l_it / (B * max_length)      a constant normaliser: no length bias
                                                                        (Dr. GRPO, Liu et al. 2025, sec. 3.1)

    The sequence means are over responses with at least one valid token (a fully masked one, e.g. a
    truncated completion left out, neither counts nor dilutes); with none the loss is 0 (with a graph).
    `max_length` (the generation budget, tokens) is needed by ``seq-mean-token-sum-norm`` only.
    Raises ValueError for an unknown mode or a missing `max_length`."""
    valid = mask.bool().expand_as(loss)
    masked = torch.where(valid, loss, torch.zeros_like(loss))  # (B, T): NaN/inf in padding cannot leak
    mask = valid.to(loss.dtype)
    if mode == "token-mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if mode == "seq-mean-token-sum-norm":
        if not max_length or max_length < 1:
            raise ValueError("seq-mean-token-sum-norm needs max_length, the generation budget in tokens")
        return masked.sum() / (loss.shape[0] * max_length)
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}; got {mode!r}")
    lengths = mask.sum(dim=1)  # (B,)
    per_sequence = masked.sum(dim=1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_sequence = per_sequence / lengths.clamp(min=1.0)
    present = (lengths > 0).to(loss.dtype)  # (B,)
    return (per_sequence * present).sum() / present.sum().clamp(min=1.0)


def sequence_log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """GSPO's per-token log-ratio (Zheng et al. 2025, eq. 7 and its token form, eq. 13), (B, T)::

        log s_i   = (1 / |y_i|) sum_t (log pi(y_it) - log pi_old(y_it))      the length-normalised sequence ratio
        log s_it  = sg[log s_i] + log pi(y_it) - sg[log pi(y_it)]

    Every token of response i carries the value log s_i; its gradient is that of its own log pi(y_it)
    scaled by s_i (what GSPO-token differentiates). A response without valid tokens gets 0."""
    valid = mask.bool()
    lengths = valid.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    diff = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    seq = diff.sum(dim=1, keepdim=True) / lengths  # (B, 1)
    return seq.detach() + logprobs - logprobs.detach()  # (B, T)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
    cliprange_high: float | None = None,
    loss_agg_mode: str = "token-mean",
    max_length: int | None = None,
    importance_sampling_level: str = "token",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """PPO's clipped surrogate objective, negated, per token (Schulman et al. 2017, eq. 7).

    Args:
        logprobs:     (B, T) log pi_theta(y_t) under the policy being trained (with gradient).
        old_logprobs: (B, T) the same under the policy that sampled the batch (detached).
        advantages:   (B, T), or (B, 1) for one advantage per response (RLOO, GRPO), broadcast over T.
        mask:         (B, T) valid response tokens.
        cliprange:    epsilon, the lower clip (1 - eps); also the upper one unless `cliprange_high`.
        cliprange_high: the upper clip 1 + eps_high (DAPO's clip-higher, Yu et al. 2025, eq. 10: a larger
                      eps_high, e.g. 0.28, lets unlikely tokens with positive advantage grow; None = eps).
        loss_agg_mode: how the per-token losses become one number (``aggregate_loss``).
        max_length:   the generation budget, for ``seq-mean-token-sum-norm``.
        importance_sampling_level: 'token' (PPO's per-token ratio) or 'sequence' (GSPO, Zheng et al.
                      2025: one length-normalised ratio per response, ``sequence_log_ratio``; its paper
                      clips it at about 3e-4 / 4e-4 and aggregates with ``seq-mean-token-mean``).
        weights:      (B, T) or None: each token's term multiplied by its weight (detached), the
                      importance correction of rollouts sampled by another engine
                      (`rlhf.mismatch.mismatch_weights`; verl and Yao et al. 2025 weight the clipped term).

    With ratio = exp(logprobs - old_logprobs), as CleanRL names them::

        pg_loss1 = -A * ratio
        pg_loss2 = -A * clip(ratio, 1 - eps, 1 + eps_high)
        loss     = aggregate(max(pg_loss1, pg_loss2))

    The max of the negated terms is the paper's min: the pessimistic bound, flat (no gradient) once the
    ratio has moved past the clip in the direction the advantage favours. The default aggregate is the
    mean over all valid tokens of the batch (lm-human-preferences), so long responses weigh more than
    short ones. Raises ValueError for an unknown `importance_sampling_level` or `loss_agg_mode`.

    Stats: ``loss/policy``; ``policy/clipfrac``, the share of tokens where the clipped term is the larger
    (pg_loss2 > pg_loss1: the gradient is cut there -- lm-human-preferences' ``pg_clipfrac``, not
    CleanRL's |ratio - 1| > eps); ``policy/approx_kl`` = 0.5 * mean((logprobs - old_logprobs)^2), the k2
    estimator of KL(pi_old || pi_theta) (Schulman 2020), to stop an epoch early when it grows; and
    ``policy/ratio_mean``.
    """
    if importance_sampling_level not in ("token", "sequence"):
        raise ValueError(
            f"importance_sampling_level must be token or sequence; got {importance_sampling_level!r}"
        )
    token_logratio = logprobs - old_logprobs  # (B, T)
    logratio = token_logratio if importance_sampling_level == "token" else sequence_log_ratio(
        logprobs, old_logprobs, mask
    )  # fmt: skip
    ratio = torch.exp(logratio)
    high = cliprange if cliprange_high is None else cliprange_high
    pg_loss1 = -advantages * ratio  # (B, T)
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + high)
    per_token = torch.max(pg_loss1, pg_loss2)  # (B, T)
    loss = aggregate_loss(
        per_token if weights is None else per_token * weights, mask, loss_agg_mode, max_length
    )
    with torch.no_grad():
        stats = {
            "loss/policy": float(loss),
            "policy/clipfrac": float(masked_mean((pg_loss2 > pg_loss1).float(), mask)),
            "policy/approx_kl": float(masked_mean(0.5 * token_logratio**2, mask)),
            "policy/ratio_mean": float(masked_mean(ratio, mask)),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, Stats]:
    """PPO's clipped value loss (the OpenAI baselines / lm-human-preferences critic loss, as in CleanRL).

    Args:
        values:     (B, T) V_theta(s_t) of the critic being trained (with gradient).
        old_values: (B, T) the critic's values at rollout time (detached).
        returns:    (B, T) GAE returns R_t (``rl_math.gae``).
        mask:       (B, T) valid response tokens.
        cliprange_value: c, how far a value may move from ``old_values`` before its gradient is cut.

    ::

        v_clipped = old_values + clip(values - old_values, -c, c)
        loss      = 0.5 * masked_mean(max((values - R)^2, (v_clipped - R)^2))

    Stats: ``loss/value``; ``value/clipfrac``, the share of tokens where the clipped error is the larger.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)  # (B, T)
    v_loss_unclipped = (values - returns) ** 2
    v_loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask)
    with torch.no_grad():
        stats = {
            "loss/value": float(loss),
            "value/clipfrac": float(masked_mean((v_loss_clipped > v_loss_unclipped).float(), mask)),
        }
    return loss, stats


# ---------------------------------------------------------------- DPO family (direct preference optimisation)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
    tie: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """DPO and its variants on sequence log-probs log pi(y | x) (sums over response tokens).

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) under the policy being trained (with gradient).
        ref_chosen_logps, ref_rejected_logps:       (B,) under the frozen reference (cached, detached).
        beta:       the KL strength; for IPO the regulariser tau.
        loss_type:  'sigmoid' (DPO, Rafailov et al. 2023, eq. 7), or 'ipo' (Azar et al. 2023, eq. 17).
        label_smoothing: eps for conservative DPO (cDPO, Mitchell 2023): the chance a label is flipped.
        weights:    (B,) per-pair weights (labeller reliability); weighted mean as in Bradley-Terry.
        tie:        (B,) bool: pairs judged equally good.

    With the implicit reward r(y) = beta * (log pi(y|x) - log pi_ref(y|x)) and
    h = (log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))::

        sigmoid: l = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
        ipo:     l = (h - 1 / (2 tau))^2

    DPO is Bradley-Terry on the implicit rewards, so 'sigmoid' IS ``bradley_terry_loss`` on them, ties
    included (a 0.5 target: minimised at h = 0). An IPO tie regresses h to 0. At h = 0 the DPO loss is
    log 2 and the IPO loss 1 / (4 tau^2).

    Stats: ``loss/dpo``, ``rewards/chosen`` and ``rewards/rejected`` (mean implicit rewards),
    ``rewards/accuracy`` (share of non-tie pairs with r_c > r_r), ``rewards/margin`` (mean r_c - r_r),
    ``logps/chosen``, ``logps/rejected`` (policy sequence log-probs).
    """
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (B,)
    if loss_type == "sigmoid":
        loss, bt = bradley_terry_loss(chosen_rewards, rejected_rewards, None, weights, label_smoothing, tie)
    else:
        h = (chosen_rewards - rejected_rewards) / beta  # (B,)
        target = torch.full_like(h, 1.0 / (2.0 * beta))
        if tie is not None:
            target = torch.where(tie, torch.zeros_like(h), target)
        loss = _weighted_mean((h - target) ** 2, weights)
        _, bt = bradley_terry_loss(chosen_rewards.detach(), rejected_rewards.detach(), tie=tie)
    stats = {
        "loss/dpo": float(loss.detach()),
        "rewards/chosen": bt["reward/chosen"],
        "rewards/rejected": bt["reward/rejected"],
        "rewards/accuracy": bt["reward/accuracy"],
        "rewards/margin": bt["reward/margin"],
        "logps/chosen": float(policy_chosen_logps.detach().float().mean()),
        "logps/rejected": float(policy_rejected_logps.detach().float().mean()),
    }
    return loss, stats


# ---------------------------------------------------------------- KTO (binary feedback)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    label: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """Kahneman-Tversky optimisation (KTO, Ethayarajh et al. 2024, arXiv:2402.01306) on unpaired binary
    labels: L_KTO = E_{x,y}[lambda_y - v(x, y)], as TRL's `KTOTrainer.kto_loss` computes it.

    Args:
        policy_logps:    (B,) log pi(y_i | x_i) of each labelled completion (sums over its tokens).
        ref_logps:       (B,) the same under the frozen reference (cached, detached).
        label:           (B,) bool: True = desirable (thumbs up), False = undesirable.
        policy_kl_logps, ref_kl_logps: (B,) log-probs of MISMATCHED pairs (x_i with another example's
                         completion) under policy and reference: the KL estimate's sample.
        beta:            KL strength; larger stays closer to the reference.
        desirable_weight, undesirable_weight: lambda_D and lambda_U.
        weights:         (B,) per-example weights (labeller reliability) multiplying lambda; None = ones.

    With r_i = log pi(y_i|x_i) - log pi_ref(y_i|x_i) and the reference point
    z = max(0, mean_j [log pi(y'_j|x_j) - log pi_ref(y'_j|x_j)]) over the mismatched pairs, detached
    (the paper's z_ref: a biased but stable estimate of KL(pi || pi_ref), TRL's `kl`)::

        desirable:   l_i = lambda_D (1 - sigmoid(beta (r_i - z)))
        undesirable: l_i = lambda_U (1 - sigmoid(beta (z - r_i)))
        loss = mean_i w_i l_i

    The paper writes v = lambda sigmoid(...) and L = lambda - v; the same. The mean is over all B examples,
    as TRL's (not normalised by the weights): at policy = reference (r = z = 0) each example's loss is
    lambda / 2, so the batch's is 0.5 * mean lambda.

    Stats: ``loss/kto``; ``rewards/chosen`` and ``rewards/rejected`` (mean beta * r over desirable and
    undesirable examples; NaN when the batch has none), ``rewards/margin`` (their difference), ``kl``
    (z), ``logps/chosen``, ``logps/rejected`` (policy sequence log-probs), ``kto/desirable_fraction``.
    """
    label = label.to(torch.bool)
    z = (policy_kl_logps - ref_kl_logps).detach().float().mean().clamp(min=0)  # scalar
    r = policy_logps - ref_logps  # (B,)
    lam = torch.where(label, torch.full_like(r, desirable_weight), torch.full_like(r, undesirable_weight))
    if weights is not None:
        lam = lam * weights.to(r.dtype)
    # the value v(x, y) of the paper: sigmoid(beta (r - z)) for gains, sigmoid(beta (z - r)) for losses
    value = torch.sigmoid(beta * torch.where(label, r - z, z - r))  # (B,)
    loss = (lam * (1.0 - value)).mean()
    rewards = beta * r.detach().float()  # (B,)
    chosen, rejected = rewards[label], rewards[~label]
    stats = {
        "loss/kto": float(loss.detach()),
        "rewards/chosen": _mean_or_nan(chosen),
        "rewards/rejected": _mean_or_nan(rejected),
        "rewards/margin": _mean_or_nan(chosen) - _mean_or_nan(rejected),
        "kl": float(z),
        "logps/chosen": _mean_or_nan(policy_logps.detach()[label]),
        "logps/rejected": _mean_or_nan(policy_logps.detach()[~label]),
        "kto/desirable_fraction": float(label.float().mean()),
    }
    return loss, stats


def kto_weight_ratio(
    n_desirable: int, n_undesirable: int, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> float:
    """lambda_D n_D / (lambda_U n_U): the KTO paper advises keeping it in [1, 4/3]; inf when
    there are no undesirable examples, NaN when there are none at all."""
    desirable, undesirable = desirable_weight * n_desirable, undesirable_weight * n_undesirable
    if undesirable == 0:
        return math.nan if desirable == 0 else math.inf
    return desirable / undesirable


# ---------------------------------------------------------------- ILQL (implicit language Q-learning)


def expectile_loss(diff: torch.Tensor, tau: float, mask: torch.Tensor) -> torch.Tensor:
    """Asymmetric squared loss of IQL (Kostrikov et al. 2021, eq. 5): mean over mask of |tau - 1(u < 0)| u^2.

    diff (B, T) is u = target - prediction. With tau > 0.5 under-estimates cost more, so the prediction
    tends to an upper expectile of the target: V(s) approaches max_a Q(s, a) over the data's actions as
    tau -> 1 without querying actions the data never took. At tau = 0.5 it is half the squared error.
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return masked_mean(weight * diff**2, mask)


def n_step_targets(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, n: int
) -> torch.Tensor:
    """y_t = sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}), the sum stopping at the last valid token
    (terminal: nothing is bootstrapped after it); rewards, values, mask (B, T) -> (B, T)."""
    if n < 1:
        raise ValueError(f"n_step must be at least 1, got {n}")
    T = rewards.shape[1]
    mask = mask.bool()
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    y = torch.zeros_like(rewards)
    for k in range(min(n, T)):  # discounted rewards r_{t+k}, zero beyond the response
        y[:, : T - k] += gamma**k * rewards[:, k:]
    if n < T:  # bootstrap from V(s_{t+n}) where that state is still inside the response
        alive = torch.where(mask[:, n:], values[:, n:], torch.zeros_like(values[:, n:]))
        y[:, : T - n] += gamma**n * alive
    return y


def ilql_loss(
    q1: torch.Tensor,
    q2: torch.Tensor,
    target_q: torch.Tensor,
    values: torch.Tensor,
    q1_logits: torch.Tensor,
    q2_logits: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 0.99,
    tau: float = 0.7,
    cql_scale: float = 0.1,
    n_step: int = 1,
) -> tuple[torch.Tensor, Stats]:
    """ILQL's value losses (Snell et al. 2022, sec. 4) on T response tokens; returns (loss, stats).

    Args:
        q1, q2:     (B, T) Q_i(s_t, a_t) of the two trained Q heads at the taken tokens.
        target_q:   (B, T) min_i Qhat_i(s_t, a_t) of the Polyak-averaged target heads (no gradient).
        values:     (B, T) V(s_t) of the value head.
        q1_logits, q2_logits: (B, T, V) Q_i(s_t, .) over the vocabulary, for the CQL term.
        actions:    (B, T) the tokens a_t taken in the data.
        rewards:    (B, T) r_t (a per-response reward sits on the last token).
        mask:       (B, T) valid response tokens; the last valid one is terminal.
        gamma, tau: discount and expectile; cql_scale: weight of the conservative term.
        n_step:     the TD target's horizon: 1 is the paper's one-step backup; n sums n rewards before
                    bootstrapping, so a reward at the end reaches the first token in T / n rounds
                    instead of T (n >= T, or 0: the Monte-Carlo return).

    ::

        y_t     = r_t + gamma * V(s_{t+1}) * (1 - done_t)        (V detached: a fixed regression target)
                  [n-step: sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}), stopping at the terminal]
        L_Q     = sum_i masked_mean((Q_i(s_t, a_t) - y_t)^2)
        L_V     = masked_mean(|tau - 1(u < 0)| u^2),   u = Qhat(s_t, a_t) - V(s_t)
        L_CQL   = sum_i masked_mean(-log softmax(Q_i(s_t, .))[a_t])
        loss    = L_Q + L_V + cql_scale * L_CQL

    The CQL term (Kumar et al. 2020, as ILQL states it) pushes down Q on tokens the data did not take.
    The language-model (behaviour cloning) loss is added by the trainer from the LM's own logits.
    Stats: ``loss/q``, ``loss/v``, ``loss/cql``, ``values/q``, ``values/v``, ``values/target``.
    """
    mask = mask.bool()
    horizon = n_step if n_step > 0 else rewards.shape[1]
    y = n_step_targets(rewards, values.detach(), mask, gamma, horizon)  # (B, T)
    loss_q = masked_mean((q1 - y) ** 2, mask) + masked_mean((q2 - y) ** 2, mask)
    loss_v = expectile_loss(target_q.detach() - values, tau, mask)
    loss_cql = sum(
        masked_mean(F.cross_entropy(logits.transpose(1, 2), actions, reduction="none"), mask)
        for logits in (q1_logits, q2_logits)
    )
    loss = loss_q + loss_v + cql_scale * loss_cql
    with torch.no_grad():
        stats = {
            "loss/q": float(loss_q),
            "loss/v": float(loss_v),
            "loss/cql": float(loss_cql),
            "values/q": float(masked_mean(torch.min(q1, q2), mask)),
            "values/v": float(masked_mean(values, mask)),
            "values/target": float(masked_mean(y, mask)),
        }
    return loss, stats
