"""Adaptive feedback type: ask for a comparison, a K-way ranking, a Likert rating or a binary good / bad
judgement, whichever buys the most expected information per second of the labeller's time (pure numpy).

The model (the panel's own answer models, so the simulation and the choice agree):
- belief: the responses' utilities u (K,) are independent Gaussians N(mu_k, s_k^2) -- e.g. the reward
  ensemble's mean and spread, on the scale where the labeller's rationality beta applies;
- answers: pairwise Bradley-Terry P(a > b) = sigmoid(beta (u_a - u_b)); ranking Plackett-Luce on
  beta u; rating an ordered logit, latent beta u + Logistic(0, 1/sqrt 2) cut at beta * RATING_CUTS;
  binary the same ordered logit with one cut at the labeller's bar t, P(good) = sigmoid(beta (u - t) /
  RATING_NOISE). A mistake (probability eps) is a uniformly random answer;
- information: the expected entropy reduction of the Gaussian belief under a Laplace (Fisher)
  approximation, 0.5 log det(I + S F S), S = diag(s), F the answer's Fisher information about u at mu
  (Lindley 1956; the usual D-optimal design criterion). Pairwise: F = g g^T I_d with
  I_d = (dP/dd)^2 / (P (1 - P)), dP/dd = (1 - eps) beta P0 (1 - P0). Plackett-Luce: the expected
  Fisher matrix, sum over the stages of beta^2 (diag(q) - q q^T) on the items left (q the choice
  probabilities), averaged over orderings (exact for K <= 6); mistakes scale it by (1 - eps)^2
  (exact for a pair near P = 1/2, an approximation otherwise). Rating: I_u = sum_k (dP_k/du)^2 / P_k,
  then discounted for the labeller's unknown personal offset on the scale (c ~ N(0, tau^2), the
  calibration drift that makes Likert data hard to pool): the rating measures u + c, so what it says
  about u is I_u / (1 + tau^2 I_u) -- it saturates at 1 / tau^2 however careful the labeller. Binary:
  I_u = (dP/du)^2 / (P (1 - P)) with P = eps / 2 + (1 - eps) P0, dP/du = (1 - eps) (beta / RATING_NOISE)
  P0 (1 - P0) (a rating with one cut), and the same discount: each labeller's bar is t + c with an
  unknown personal offset c ~ N(0, tau_b^2) (the panel spreads its bars by 0.3, the default tau_b), so a
  "good" measures u - c as a rating measures u + c. A binary answer carries at most log 2 nats and
  saturates like a rating, but costs half the fixed time: it wins for noisy labellers and long answers;
- cost: the panel's timing model, base + seconds_per_word * words read (+ per_item per ranked answer);
  a binary judgement takes `binary_base_share` (the panel's BINARY_BASE_SHARE, 0.5) of the base: one
  answer read and no two weighed.
The choice is argmax information / expected seconds.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

RATING_CUTS = (-0.9, -0.45, 0.0, 0.35, 0.65, 0.9)  # the panel's utility thresholds between Likert points
RATING_NOISE = 1 / math.sqrt(2)  # logistic scale of one perception (Thurstone: half a comparison's variance)
KINDS = ("pairwise", "ranking", "rating", "binary")
BINARY_THRESHOLD = 0.175  # the panel's default bar for "good" (utility units)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def pairwise_fisher(d: float, beta: float, eps: float) -> float:
    """Fisher information about d = u_a - u_b of one comparison (see the module docstring)."""
    p0 = _sigmoid(beta * d)
    p = eps / 2 + (1 - eps) * p0
    slope = (1 - eps) * beta * p0 * (1 - p0)
    return float(slope**2 / max(p * (1 - p), 1e-12))


def plackett_luce_fisher(mu: np.ndarray, beta: float, eps: float) -> np.ndarray:
    """Expected Fisher information matrix (K, K) about u of one full Plackett-Luce ranking on beta * mu."""
    k = len(mu)
    if k > 6:
        raise ValueError("exact expectation over orderings is for K <= 6")
    w = np.exp(beta * (mu - mu.max()))
    fisher = np.zeros((k, k))
    for order in itertools.permutations(range(k)):
        prob, info, left = 1.0, np.zeros((k, k)), list(range(k))
        for item in order[:-1]:  # the last stage has one item left: no information
            q = np.zeros(k)
            q[left] = w[left] / w[left].sum()
            prob *= q[item]
            info += np.diag(q) - np.outer(q, q)
            left.remove(item)
        fisher += prob * info
    return (1 - eps) ** 2 * beta**2 * fisher


def rating_fisher(u: float, beta: float, eps: float, cuts=RATING_CUTS, noise: float = RATING_NOISE) -> float:
    """Fisher information about u of one Likert rating under the ordered logit above."""
    z = np.concatenate([[-np.inf], beta * (np.asarray(cuts) - u) / noise, [np.inf]])
    cdf = _sigmoid(z)
    dens = cdf * (1 - cdf)  # logistic density at each cut (0 at +-inf)
    p0 = np.diff(cdf)  # (7,)
    dp = -(beta / noise) * np.diff(dens)  # d P_k / d u
    p = eps / len(p0) + (1 - eps) * p0
    return float((((1 - eps) * dp) ** 2 / np.maximum(p, 1e-12)).sum())


def binary_fisher(
    u: float, beta: float, eps: float, threshold: float = BINARY_THRESHOLD, noise: float = RATING_NOISE
) -> float:
    """Fisher information about u of one good / bad answer, P(good) = sigmoid(beta (u - threshold) / noise)
    with mistakes eps (see the module docstring); equals `rating_fisher` with the one cut `threshold`."""
    p0 = float(_sigmoid(beta * (u - threshold) / noise))
    p = eps / 2 + (1 - eps) * p0
    slope = (1 - eps) * (beta / noise) * p0 * (1 - p0)  # dP/du
    return float(slope**2 / max(p * (1 - p), 1e-12))


def information(fisher: np.ndarray, std: np.ndarray) -> float:
    """0.5 log det(I + S F S) nats, S = diag(std): the Laplace-approximate entropy reduction."""
    s = np.diag(std)
    return 0.5 * float(np.linalg.slogdet(np.eye(len(std)) + s @ fisher @ s)[1])


def choose_feedback_type(
    mu: np.ndarray,
    std: np.ndarray,
    words: np.ndarray,
    prompt_words: float,
    beta: float,
    eps: float = 0.1,
    base_seconds: float = 8.0,
    seconds_per_word: float = 0.25,
    ranking_item_seconds: float = 2.0,
    rating_offset_std: float = 0.3,
    binary_threshold: float = BINARY_THRESHOLD,
    binary_offset_std: float = 0.3,
    binary_base_share: float = 0.5,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[dict, dict[str, float]]:
    """Pick the query for K >= 2 candidate responses (mu, std, words: (K,)). Options: the best pair,
    a ranking of all K, a rating of the best single response, a good / bad judgement of the best single
    response; `rating_offset_std` is tau above (utility units; 0 = labellers share one calibrated
    scale), `binary_offset_std` tau_b, the spread of the labellers' bars around `binary_threshold`.
    `kinds` limits the options (e.g. to what a project's labelling app asks). Returns ({"kind",
    "items"}, stats) with each option's information (nats), seconds and nats per second."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {KINDS}; got {kinds!r}")
    mu, std, words = (np.asarray(a, dtype=float) for a in (mu, std, words))
    k = len(mu)
    options = {}
    best_pair, best_info = None, -1.0
    for a, b in itertools.combinations(range(k), 2):
        g = np.zeros(k)
        g[a], g[b] = 1.0, -1.0
        info = information(pairwise_fisher(mu[a] - mu[b], beta, eps) * np.outer(g, g), std)
        if info > best_info:
            best_pair, best_info = (a, b), info
    options["pairwise"] = (
        best_pair,
        best_info,
        base_seconds + seconds_per_word * (prompt_words + words[list(best_pair)].sum()),
    )
    if k > 2:
        info = information(plackett_luce_fisher(mu, beta, eps), std)
        seconds = base_seconds + ranking_item_seconds * k + seconds_per_word * (prompt_words + words.sum())
        options["ranking"] = (tuple(range(k)), info, seconds)
    tau2 = rating_offset_std**2
    fisher = [rating_fisher(mu[i], beta, eps) for i in range(k)]
    gains = [information(np.array([[f / (1 + tau2 * f)]]), std[i : i + 1]) for i, f in enumerate(fisher)]
    i = int(np.argmax(gains))
    options["rating"] = ((i,), gains[i], base_seconds + seconds_per_word * (prompt_words + words[i]))
    tau2 = binary_offset_std**2
    fisher = [binary_fisher(mu[i], beta, eps, binary_threshold) for i in range(k)]
    gains = [information(np.array([[f / (1 + tau2 * f)]]), std[i : i + 1]) for i, f in enumerate(fisher)]
    i = int(np.argmax(gains))
    options["binary"] = (
        (i,),
        gains[i],
        binary_base_share * base_seconds + seconds_per_word * (prompt_words + words[i]),
    )
    options = {kind: option for kind, option in options.items() if kind in kinds}
    rate = {kind: info / seconds for kind, (_, info, seconds) in options.items()}
    kind = max(rate, key=rate.get)
    stats = {}
    for name, (_, info, seconds) in options.items():
        stats.update(
            {
                f"type/{name}_nats": info,
                f"type/{name}_seconds": seconds,
                f"type/{name}_nats_per_s": rate[name],
            }
        )
    return {"kind": kind, "items": list(options[kind][0])}, stats


def choose_per_labeller(
    mu: np.ndarray, std: np.ndarray, words: np.ndarray, prompt_words: float, rationality: np.ndarray, **kw
) -> tuple[list[dict], dict[str, float]]:
    """`choose_feedback_type` for each labeller of a panel: the same candidates (mu, std, words: (K,)) and
    each labeller's own rationality (L,), as `rlhf.feedback.quality` estimates it from their labels, on
    the scale of mu (reward-model utilities: 1 = as sharp as the reward model). A rationality at or
    below 0 (a spammer's estimate can come out there) counts as 1e-3: every kind then tells ~nothing
    and the cheapest wins. (A labeller's overall speed does not enter: it scales every kind's time
    alike and leaves the choice as it is; it matters for whom to ask, `rlhf.feedback.routing`.)
    Other keywords go to `choose_feedback_type`. Returns ([{"kind", "items"}] per labeller, stats with
    the count of each kind, `type/per_labeller_<kind>`)."""
    choices = [
        choose_feedback_type(mu, std, words, prompt_words, max(float(beta), 1e-3), **kw)[0]
        for beta in np.asarray(rationality, float)
    ]
    stats = {f"type/per_labeller_{kind}": float(sum(c["kind"] == kind for c in choices)) for kind in KINDS}
    return choices, stats
