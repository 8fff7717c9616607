"""The pure maths of on-policy RL fine-tuning (PPO, RLOO, GRPO): functions of tensors, no models.

- masked statistics over response tokens: ``masked_mean``, ``masked_var``, ``masked_whiten``;
- advantages: ``gae`` (with a critic), ``rloo_advantages`` and ``grpo_advantages`` (critic-free);
- the KL penalty: per-token estimators ``kl_k1`` / ``kl_k2`` / ``kl_k3``, ``shaped_rewards`` and the
  ``FixedKLController`` / ``AdaptiveKLController`` of lm-human-preferences;
- the critic's diagnostic ``explained_variance``.

Shapes: B rows (responses), T response tokens; ``mask`` (B, T) marks real tokens (1/True) vs padding
after EOS. ``scores`` are reward-model outputs, one per response; ``rewards`` are per-token and shaped.
Functions that make a training signal return ``(value, stats)``, stats a flat dict of Python floats.
This module imports only torch.
"""

from __future__ import annotations

import math

import torch

Stats = dict[str, float]


# ---------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is true: sum(x * m) / sum(m), over all of x or along `dim`.

    x (B, T), mask (B, T) bool or 0/1 (or broadcastable to x). Masked positions are replaced by 0 before
    the sum (``torch.where``, not ``x * m``), so NaN or inf in padding cannot leak in. An empty mask
    gives 0 rather than 0/0.
    """
    m = mask.bool().expand_as(x)
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / m.sum().clamp_min(1)
    return total.sum(dim) / m.sum(dim).clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all valid positions (a scalar tensor); x, mask (B, T).

    var = sum_m (x - mean)^2 / n, times n / (n - 1) when unbiased (Bessel's correction, as
    lm-human-preferences and TRL do). Raises ValueError when there are fewer than 2 valid positions
    (1 when biased): the variance is then undefined, and whitening by it would divide by ~0.
    """
    n = int(mask.bool().expand_as(x).sum())
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} valid positions, got {n}")
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    return var * n / (n - 1) if unbiased else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over valid positions; x, mask (B, T) -> (B, T).

    Mean and (unbiased) variance are taken over the valid positions only, so padding does not pull
    them (lm-human-preferences ``whiten``; "The N+ implementation details of RLHF with PPO", Huang et
    al. 2024). ``shift_mean=False`` adds the mean back -- only the scale changes -- which is how
    rewards are whitened there, keeping their sign. Invalid positions are set to 0 (not left as
    computed), so a later un-masked sum cannot pick them up. With a single valid position (a batch of
    one response of one token) there is no spread to measure: its variance is taken as 0, so it
    whitens to 0 (or to itself with ``shift_mean=False``) instead of failing.
    """
    n = int(mask.bool().expand_as(x).sum())
    mean = masked_mean(x, mask)
    var = masked_var(x, mask) if n >= 2 else torch.zeros_like(mean)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


# ---------------------------------------------------------------- advantages with a critic


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16), right to left over tokens.

    Args:
        rewards: (B, T) per-token rewards r_t (``shaped_rewards``).
        values:  (B, T) critic values V(s_t), detached (GAE builds targets, not a loss).
        mask:    (B, T) valid response tokens.

    Returns advantages A_t (B, T) and returns R_t = A_t + V(s_t) (B, T), the critic's targets::

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * A_{t+1}

    The episode ends at the last valid token: V(s_{t+1}) and A_{t+1} are 0 there (and at T - 1), so
    the values and rewards of padding never enter. Masked positions give A = R = 0. A masked position
    inside a row would likewise end the episode before it. One loop over T, vectorised over B.
    """
    m = mask.bool()
    zeros = torch.zeros_like(values[:, 0])  # (B,)
    next_value, next_adv = zeros, zeros  # V(s_{t+1}) and A_{t+1}, 0 past the end
    advantages = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        adv = torch.where(m[:, t], delta + gamma * lam * next_adv, zeros)
        next_value = torch.where(m[:, t], values[:, t], zeros)
        next_adv = adv
        advantages.append(adv)
    advantages = torch.stack(advantages[::-1], dim=1)  # (B, T)
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over valid tokens (CleanRL's ``explained_var``); values, returns (B, T).

    1 is a perfect critic, 0 no better than predicting the mean return, < 0 worse than that. NaN when
    the returns do not vary (as in CleanRL), or when there are fewer than 2 valid tokens.
    """
    if int(mask.bool().sum()) < 2:
        return math.nan
    var_returns = float(masked_var(returns.detach(), mask))
    if var_returns == 0.0:
        return math.nan
    return 1.0 - float(masked_var((returns - values).detach(), mask)) / var_returns


# ---------------------------------------------------------------- KL penalty


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(x) - log pi_ref(x), per token (B, T): unbiased for KL(pi || pi_ref) with x ~ pi, but
    high-variance and negative for some samples (Schulman, "Approximating KL divergence", 2020)."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 (log r)^2 with log r = log pi_ref(x) - log pi(x), per token (B, T): always >= 0, biased,
    low variance; its gradient is that of the KL to second order (Schulman 2020)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = pi_ref(x) / pi(x), per token (B, T): unbiased for KL(pi || pi_ref)
    with x ~ pi and always >= 0, since log r <= r - 1 (Schulman 2020; the GRPO penalty, Shao et al.
    2024, eq. 4). ``expm1`` keeps r - 1 exact for small log r."""
    log_r = ref_logprobs - logprobs
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def _last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) long index of the last valid position of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    return torch.where(mask.bool(), positions, 0).amax(dim=1)


def shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, Stats]:
    """Per-token rewards: a KL penalty on every token, the score on the last (Ziegler et al. 2019, eq. 2).

    Args:
        scores:       (B,) reward-model scores of the whole responses.
        logprobs:     (B, T) log pi(y_t | x, y_<t) under the policy that sampled them.
        ref_logprobs: (B, T) the same under the frozen reference model.
        mask:         (B, T) valid response tokens (EOS included).
        kl_coef:      beta, the KL coefficient (from a KL controller).
        estimator:    "k1", "k2" or "k3" (see ``kl_k1``...); "k1" is the lm-human-preferences choice.

    ::

        rewards_t = -beta * KL_t + [t == last valid token] * score

    so that sum_t rewards_t = score - beta * KL(pi || pi_ref) estimated on the sample (the "N+
    implementation details" recipe). Padding gets 0; a row with no valid token gets no score.
    Compute this under ``torch.no_grad()``: rewards are targets.

    Stats: ``objective/kl`` (mean over rows of sum_t KL_t), ``objective/scores`` (mean score),
    ``objective/non_score_reward`` (mean over rows of sum_t -beta KL_t) and ``objective/rlhf_reward``
    (their sum: the objective PPO maximises).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(KL_ESTIMATORS)}, got {estimator!r}")
    m = mask.bool()
    kl = torch.where(
        m, KL_ESTIMATORS[estimator](logprobs, ref_logprobs), torch.zeros_like(logprobs)
    )  # (B, T)
    non_score = -kl_coef * kl  # (B, T)
    has_token = m.any(dim=1)  # (B,)
    score_at_end = torch.where(
        has_token, scores.to(non_score.dtype), torch.zeros_like(scores, dtype=non_score.dtype)
    )
    rewards = non_score.scatter_add(1, _last_valid_index(m)[:, None], score_at_end[:, None])  # (B, T)
    kl_per_row = kl.detach().sum(dim=1)  # (B,)
    non_score_per_row = non_score.detach().sum(dim=1)  # (B,)
    stats = {
        "objective/kl": float(kl_per_row.mean()),
        "objective/scores": float(scores.detach().float().mean()),
        "objective/non_score_reward": float(non_score_per_row.mean()),
        "objective/rlhf_reward": float((scores.detach() + non_score_per_row).mean()),
    }
    return rewards, stats


class FixedKLController:
    """A constant KL coefficient beta; same interface as ``AdaptiveKLController`` (lm-human-preferences)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing: the coefficient is fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Steers beta so that the measured KL tracks a target (Ziegler et al. 2019, sec. 2.2)::

        e_t    = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta  <- beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    ``current_kl`` is the per-response KL of the batch (``objective/kl``); ``n_steps`` the number of
    episodes (responses) it came from; ``horizon`` how many episodes a full correction takes. The clip
    bounds the change per update, so one noisy batch cannot swing beta far.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))


# ---------------------------------------------------------------- critic-free advantages


def _groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B*K,) scores, K consecutive samples per prompt -> (B, K)."""
    if k < 2 or scores.dim() != 1 or scores.numel() % k:
        raise ValueError(
            f"need k >= 2 and a 1-D scores tensor of a multiple of k, got k={k}, {tuple(scores.shape)}"
        )
    return scores.view(-1, k)


def _all_equal(grouped: torch.Tensor) -> torch.Tensor:
    """(B, K) -> (B, 1) bool: the group's K scores are all the same. Tested as max == min, not as std 0:
    the mean of equal floats can be off in the last bit (three float32 scores of 0.1 - 1.0, a penalised
    response, have a mean 6e-8 away and a std of 7e-8), and GRPO's division then gave A = -0.0006."""
    return (grouped.amax(dim=1) == grouped.amin(dim=1))[:, None]


def _advantage_stats(adv: torch.Tensor, grouped: torch.Tensor) -> Stats:
    same = _all_equal(grouped).squeeze(1)  # (B,)
    group_std = grouped.detach().float().std(dim=1, unbiased=False).masked_fill(same, 0.0)  # (B,)
    return {
        "advantages/mean": float(adv.detach().float().mean()),
        "advantages/std": float(adv.detach().float().std(unbiased=False)),
        "scores/group_std": float(group_std.mean()),
        "scores/zero_std_frac": float(same.float().mean()),
    }


def rloo_advantages(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, Stats]:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024; Kool et al. 2019).

    scores (B*K,): K consecutive samples per prompt. Returns (B*K,)::

        A_i = s_i - 1/(K-1) sum_{j != i} s_j  =  K/(K-1) (s_i - mean_j s_j)

    The baseline of each sample uses only the other samples of its prompt, so it is independent of
    that sample and the gradient estimate stays unbiased.

    Stats: ``advantages/mean`` (0 by construction), ``advantages/std``, ``scores/group_std`` (mean
    within-prompt population std) and ``scores/zero_std_frac`` (share of prompts whose K scores are all
    equal: they give no learning signal, and their advantages are exactly 0).
    """
    grouped = _groups(scores, k)  # (B, K)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)  # (B, K) mean of the others
    adv = (grouped - baseline).masked_fill(_all_equal(grouped), 0.0).reshape(-1)  # (B*K,) 0 if all equal
    return adv, _advantage_stats(adv, grouped)


SCALE_REWARDS = ("group", "batch", "none")


def grpo_advantages(
    scores: torch.Tensor, k: int, eps: float = 1e-4, scale_rewards: str = "group"
) -> tuple[torch.Tensor, Stats]:
    """Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1.2, outcome supervision).

    scores (B*K,): K consecutive samples per prompt. Returns (B*K,)::

        A_i = (s_i - mean(s)) / (std(s) + eps)        mean over the K samples of the prompt

    `scale_rewards` says which std divides (TRL's names):

    - 'group': the std of the prompt's K samples (GRPO as published);
    - 'batch': the std of all B*K scores (more robust when a group's std is tiny: Hu et al. 2025,
      REINFORCE++; one scale for every prompt);
    - 'none':  no division, only the mean-centering (Dr. GRPO, Liu et al. 2025: dividing by the group's
      std favours prompts that are too easy or too hard).

    std is the *sample* std (Bessel-corrected): the paper writes only std(r), and the reference
    implementations (TRL's GRPOTrainer, OpenRLHF, verl) all use ``torch.std``'s default, so ours gives
    the same numbers. A group whose scores are all equal gets A = 0 exactly (set, not computed: see
    ``_all_equal``); eps keeps nearly equal groups finite. Raises ValueError for another `scale_rewards`.

    Stats: as ``rloo_advantages``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}; got {scale_rewards!r}")
    grouped = _groups(scores, k)  # (B, K)
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # (B, K)
    if scale_rewards == "group":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)  # sample std over the K samples
    elif scale_rewards == "batch":
        centered = centered / (grouped.std() + eps)  # sample std over all B*K scores
    adv = centered.masked_fill(_all_equal(grouped), 0.0).reshape(-1)  # (B*K,) exactly 0 if all equal
    return adv, _advantage_stats(adv, grouped)


class LagrangeMultiplier:
    """The multiplier of Safe RLHF's constrained objective (Dai et al. 2023, eq. 10):

        max_theta E[R] subject to E[C] <= d   ->   min_{lambda >= 0} max_theta E[R] - lambda (E[C] - d)

    updated by projected dual ascent after each batch: lambda <- max(0, lambda + lr * (mean C - d)). It
    rises while the mean cost exceeds the threshold d and falls (to 0 at least) while the constraint
    holds, so the policy trades helpfulness for safety only as much as the constraint needs.
    """

    def __init__(self, init: float, threshold: float, lr: float):
        if init < 0 or lr <= 0:
            raise ValueError(f"the multiplier starts >= 0 and moves at lr > 0, got {init}, {lr}")
        self.value, self.threshold, self.lr = float(init), float(threshold), float(lr)

    def update(self, mean_cost: float) -> None:
        self.value = max(0.0, self.value + self.lr * (mean_cost - self.threshold))

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "threshold": self.threshold, "lr": self.lr}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.threshold = float(state.get("threshold", self.threshold))
        self.lr = float(state.get("lr", self.lr))


# ---------------------------------------------------------------- ILQL decoding


def ilql_steered_logits(
    logits: torch.Tensor, q: torch.Tensor, v: torch.Tensor, beta: float, top_k: int = 0
) -> torch.Tensor:
    """The ILQL policy's logits (Snell et al. 2022, eq. 6): log pi(a|s) + beta * (Q(s, a) - V(s)).

    logits, q (..., V); v (..., 1). The base policy is renormalised first, so beta = 0 gives it back.
    With top_k > 0 only the k best perturbed tokens keep their logit, the rest get -inf.
    """
    steered = torch.log_softmax(logits.float(), dim=-1) + beta * (q.float() - v.float())  # (..., V)
    if top_k > 0 and top_k < steered.shape[-1]:
        kth = torch.topk(steered, top_k, dim=-1).values[..., -1:]
        steered = steered.masked_fill(steered < kth, float("-inf"))
    return steered
