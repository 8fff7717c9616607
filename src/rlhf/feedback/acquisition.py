"""Acquisition functions: which candidate comparisons to send to labellers next (pure numpy).

Input is what a reward-model ensemble of M members says about N candidate pairs (a, b):
``member_probs`` (N, M), member m's Bradley-Terry probability P_m(a > b) = sigmoid(r_m(a) - r_m(b)).
Every function returns ``(value, stats)``; `acquire` is the one interface the loop calls.

- random: the baseline (strong in published replications, e.g. Gleave & Irving 2022).
- disagreement: std over members of P_m(a > b) (Christiano et al. 2017 ask where the ensemble varies).
- entropy: predictive entropy H[mean_m P_m] -- uncertain, whether from the model or from a coin-flip pair.
- bald: mutual information between the label and the ensemble member, H[mean p] - mean H[p]
  (Houlsby et al. 2011): high only where members confidently *disagree*, so pairs that are a coin
  flip for every member (equal-utility pairs, whose labels are noise) are not chased.
- diverse: BALD-weighted greedy k-center over pair embeddings (Sener & Savarese 2018 for k-center):
  each pick maximises BALD x min(1, distance to the nearest pick or labelled pair / r), r the pool's
  median nearest-neighbour distance. A candidate nearer a pick than a typical neighbour counts as
  asked already, so a batch does not ask the same question fifty times; beyond r, information alone
  decides (uncapped distance made the batch chase outliers: 0.695 vs random's 0.722 at 2,000 labels).
- cost: BALD per expected labelling second (the information a label buys per unit of the budget that
  actually runs out); seconds come from `fit_time_model` on measured times.

A candidate may also be a K-set to rank: ``member_probs`` (N, P, M) holds the P = K(K-1)/2 within-set
pairs (`set_preference_probs`), and a set scores the sum of its pairs' scores -- a ranking answers
every one of its pairs, so its information is taken as theirs added up (they share the K utilities, so
this over-counts a little; the order it gives is what matters). "diverse" works on pairs only.
"""

from __future__ import annotations

import numpy as np

METHODS = ("random", "disagreement", "entropy", "bald", "diverse", "cost")
EPS = 1e-12


def preference_probs(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Per-member Bradley-Terry probability that a beats b: sigmoid(r_a - r_b). (N, M), (N, M) -> (N, M)."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(scores_a) - np.asarray(scores_b))))


def within_set_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j), i < j, of the K(K-1)/2 pairs of a K-set, row by row: k = 3 -> (0, 0, 1), (1, 2, 2)."""
    i, j = np.triu_indices(k, 1)
    return i, j


def set_preference_probs(set_scores: np.ndarray) -> np.ndarray:
    """Member probabilities of every within-set pair: (N, K, M) scores -> (N, P, M), P = K(K-1)/2."""
    i, j = within_set_pairs(set_scores.shape[1])
    return preference_probs(set_scores[:, i], set_scores[:, j])


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in nats, elementwise; H(0) = H(1) = 0."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)  # float32 would round 1 - EPS to 1
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def predictive_entropy(member_probs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """H[mean_m p_m]: (N, M) -> (N,)."""
    h = binary_entropy(member_probs.mean(axis=1))
    return h, {"acquisition/entropy_mean": float(h.mean())}


def bald(member_probs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Mutual information I[y; m] = H[mean_m p_m] - mean_m H[p_m] (Houlsby et al. 2011): (N, M) -> (N,).
    E.g. members (0.1, 0.9): ln 2 - H(0.1) = 0.6931 - 0.3251 = 0.3681 nats; members (0.5, 0.5): 0."""
    mi = binary_entropy(member_probs.mean(axis=1)) - binary_entropy(member_probs).mean(axis=1)
    mi = np.maximum(mi, 0.0)  # rounding can make it -1e-17
    return mi, {"acquisition/bald_mean": float(mi.mean())}


def disagreement(member_probs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Standard deviation over members of P_m(a > b): (N, M) -> (N,)."""
    std = member_probs.std(axis=1)
    return std, {"acquisition/disagreement_mean": float(std.mean())}


def pair_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance between pair embeddings where (a, b) and (b, a) are the same question:
    min(|x - y|, |x + y|) = sqrt(|x|^2 + |y|^2 - 2 |x . y|). x (N, D), y (K, D) -> (N, K)."""
    sq = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * np.abs(x @ y.T)
    return np.sqrt(np.maximum(sq, 0.0))


def k_center_greedy(
    embeddings: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    radius: float | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Greedy (weighted) k-center: repeatedly pick argmax_i weights_i * g(d(i, nearest pick or labelled)),
    g(d) = d, or min(d / radius, 1) with a radius. With no picks or labelled points yet, the first pick
    is argmax weights (the most informative).
    embeddings (N, D) -- for a pair, h_a - h_b, the direction a linear reward head sees; weights (N,) >= 0;
    labelled (K, D). Returns the picked indices (k,) in pick order."""
    n = len(embeddings)
    k = min(k, n)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    nearest = np.full(n, np.inf)
    if labelled is not None and len(labelled):
        nearest = pair_distances(embeddings, labelled).min(axis=1)
    picks: list[int] = []
    for _ in range(k):
        spread = nearest if radius is None else np.minimum(nearest / max(radius, EPS), 1.0)
        gain = w * np.where(np.isinf(nearest), 1.0, spread)
        gain[picks] = -np.inf
        i = int(np.argmax(gain))
        picks.append(i)
        nearest = np.minimum(nearest, pair_distances(embeddings, embeddings[i : i + 1])[:, 0])
    covered = float(nearest.max()) if n else 0.0
    return np.array(picks, dtype=np.int64), {"acquisition/k_center_radius": covered}


def nearest_neighbour_radius(embeddings: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """Median distance from a candidate to its nearest other candidate (on a sample of at most `sample`)."""
    if len(embeddings) < 2:
        return 0.0
    idx = rng.choice(len(embeddings), min(sample, len(embeddings)), replace=False)
    d = pair_distances(embeddings[idx], embeddings[idx])
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def fit_time_model(words: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Least-squares seconds = c0 + c1 * words over measured tasks (the store's `seconds`, the panel's
    timings). Returns (c0, c1) and the fit's R^2; with fewer than 2 distinct lengths, c1 = 0."""
    words, seconds = np.asarray(words, float), np.asarray(seconds, float)
    if len(np.unique(words)) < 2:
        return np.array([float(seconds.mean()) if len(seconds) else 1.0, 0.0]), {"time/r2": float("nan")}
    design = np.stack([np.ones_like(words), words], axis=1)  # (T, 2)
    coef, *_ = np.linalg.lstsq(design, seconds, rcond=None)
    residual = seconds - design @ coef
    r2 = 1.0 - residual.var() / max(seconds.var(), EPS)
    return coef, {"time/intercept": float(coef[0]), "time/per_word": float(coef[1]), "time/r2": float(r2)}


def acquire(
    method: str,
    member_probs: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    embeddings: np.ndarray | None = None,
    costs: np.ndarray | None = None,
    labelled_embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Pick `batch_size` of N candidates. member_probs (N, M) for pairs, (N, P, M) for K-sets (their
    within-set pairs); embeddings (N, D) for "diverse"; costs (N,) expected seconds for "cost".
    Returns (indices (k,) best first, stats); stats carry the mean score of the picked batch and of the
    pool (`acquisition/score_batch`, `.../score_pool`)."""
    if method not in METHODS:
        raise ValueError(f"acquisition method must be one of {METHODS}, got {method!r}")
    member_probs = np.asarray(member_probs)
    if member_probs.ndim == 3 and method == "diverse":
        raise ValueError("acquisition 'diverse' works on pairs, not on K-sets")
    n = len(member_probs)
    k = min(batch_size, n)
    info, stats = _per_candidate(bald, member_probs)
    if method == "random":
        score = rng.random(n)
        picks = np.argsort(-score)[:k]
    elif method == "diverse":
        if embeddings is None:
            raise ValueError("acquisition 'diverse' needs embeddings")
        score = info
        radius = nearest_neighbour_radius(embeddings, rng)
        picks, more = k_center_greedy(
            embeddings, k, weights=info + EPS, labelled=labelled_embeddings, radius=radius
        )
        stats.update(more)
    else:
        if method == "cost":
            if costs is None:
                raise ValueError("acquisition 'cost' needs costs (expected seconds per candidate)")
            score = info / np.maximum(np.asarray(costs, float), EPS)
        elif method == "bald":
            score = info
        else:
            function = disagreement if method == "disagreement" else predictive_entropy
            score, more = _per_candidate(function, member_probs)
            stats.update(more)
        # ties (e.g. every score 0 before any training signal) are broken at random, not by index
        picks = np.lexsort((rng.random(n), -score))[:k]
    stats.update(
        {
            "acquisition/score_batch": float(score[picks].mean()) if k else float("nan"),
            "acquisition/score_pool": float(score.mean()) if n else float("nan"),
            "acquisition/bald_batch": float(info[picks].mean()) if k else float("nan"),
        }
    )
    return picks, stats


def _per_candidate(function, member_probs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """`function`'s per-pair score; for K-sets (N, P, M) the sum over each set's P pairs -> (N,)."""
    if member_probs.ndim == 2:
        return function(member_probs)
    n, p, m = member_probs.shape
    score, stats = function(member_probs.reshape(n * p, m))
    return score.reshape(n, p).sum(axis=1), stats
