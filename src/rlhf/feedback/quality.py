"""Labeller quality explained by the reward model: rationality, position bias and objective mixture (numpy/scipy).

`reliability.fit_reliability` gives every response its own free utility. With little overlap between
labellers (the loop asks most comparisons once) any labeller's answers can be explained by those
utilities, and a spammer can come out as the most "rational" labeller of the panel. Here the utilities
are not free: they are the reward model's scores, shared by every response it can score, so a labeller's
rationality is identified from their own labels alone (Raykar et al. 2010, "Learning from crowds": a
per-annotator noise model around a shared classifier; Dawid & Skene 1979 for the per-annotator part).

Each label n of labeller l on a comparison (left, right) is a logistic regression on observable evidence:

    P(left chosen) = sigmoid(w_l . x_n + b_l)

x_n (K,) are left-minus-right differences. Column 0 is the *target*: the reward model's utility for the
question asked (the helpful head for "which is better?", the harmless head for "which is less harmful?").
The other columns are what a labeller might judge by instead: the other heads, log(1 + words) (length),
anything observable. w_l (K,) is the labeller's **objective mixture**: w_l0 is their **rationality** on
the target (1 = as sharp as the reward model's own Bradley-Terry probabilities, 0 = unrelated to it),
the rest say how much of their answers the off-target evidence explains. A spammer has w_l ~ 0; a
labeller who judges by length has a large length weight and, once length is accounted for, a small
rationality; careful labellers have rationality ~1 and the panel's common length habit.

Partial pooling (a hierarchical prior, as in the multi-annotator models of Rodrigues & Pereira 2018):
w_l ~ N(mu, diag(tau^2)), with the panel mean mu itself fitted under N(mu0, 1): a labeller with few
labels is shrunk to the panel, one with many is told by their own. b_l ~ N(0, bias_scale^2). MAP by
L-BFGS with the analytic gradient; each labeller's rationality sd from the Laplace approximation of
their own block of the Hessian. Columns are scaled to unit RMS inside the fit (so one tau fits every
column) and the weights are returned in the columns' own units.

Circularity: a reward model trained on a labeller's labels agrees with them more than it would with a
fresh label. Score each label with a reward model that did not train on it where you can (the loop:
the model of the round before the label was asked; `rlhf bench active`: the same); the model trained
on everything is a fallback, which flatters every labeller alike at ~200 labels each on the world.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def pair_features(
    left_scores: np.ndarray,
    right_scores: np.ndarray,
    target: np.ndarray,
    left_words: np.ndarray | None = None,
    right_words: np.ndarray | None = None,
) -> np.ndarray:
    """The evidence of `fit_quality` for N comparisons. left_scores, right_scores (N, H): the reward
    model's utilities per head (the ensemble mean); target (N,) the head index of the question each label
    answered; words (N,) response lengths in words, or None to leave length out. Returns (N, H [+ 1]):
    column 0 = the target head's difference, then the other heads' differences in head order, then
    log(1 + words_left) - log(1 + words_right)."""
    diff = np.asarray(left_scores, float) - np.asarray(right_scores, float)  # (N, H)
    n, h = diff.shape
    target = np.asarray(target, dtype=np.int64)
    rows = np.arange(n)
    others = np.array([[k for k in range(h) if k != t] for t in target], dtype=np.int64).reshape(n, h - 1)
    columns = [diff[rows, target][:, None], diff[rows[:, None], others]]
    if left_words is not None and right_words is not None:
        columns.append(
            (np.log1p(np.asarray(left_words, float)) - np.log1p(np.asarray(right_words, float)))[:, None]
        )
    return np.concatenate(columns, axis=1)


def fit_quality(
    features: np.ndarray,
    labeller: np.ndarray,
    chose_left: np.ndarray,
    n_labellers: int,
    fit_bias: bool = True,
    tau: float = 0.5,
    bias_scale: float = 1.0,
    prior_mean: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit the model above to N labels (ties left out by the caller).

    features (N, K) left-minus-right evidence, column 0 the target utility (`pair_features`); labeller
    (N,) index in [0, n_labellers); chose_left (N,) bool. `fit_bias=False` when the positions are unknown
    (a chosen/rejected file: put chosen on the left and the bias would be a free "agree" bonus). tau: the
    spread of labellers' weights around the panel mean, in the columns' RMS units. prior_mean (K,): where
    the panel mean is expected, default (1, 0, ..., 0) in the columns' own units (a labeller as sharp as
    the reward model, no off-target judging). Returns ({"weights": (L, K), "rationality": (L,),
    "rationality_sd": (L,), "bias": (L,), "panel_mean": (K,), "n_labels": (L,)}, stats).
    Raises ValueError on shapes that do not match or labeller indices out of range."""
    x = np.asarray(features, float)
    labeller = np.asarray(labeller, dtype=np.int64)
    sign = np.where(np.asarray(chose_left, bool), 1.0, -1.0)  # (N,)
    if x.ndim != 2 or len(x) != len(labeller) or len(x) != len(sign):
        raise ValueError(f"features (N, K), labeller (N,), chose_left (N,) must agree, got {x.shape}, "
                         f"{labeller.shape}, {sign.shape}")  # fmt: skip
    if len(labeller) and (labeller.min() < 0 or labeller.max() >= n_labellers):
        raise ValueError(f"labeller indices must be in [0, {n_labellers})")
    n, k = x.shape
    n_l = n_labellers
    rms = np.sqrt((x**2).mean(0)) if n else np.ones(k)
    rms = np.where(rms > 0, rms, 1.0)  # (K,)
    z_x = x / rms  # unit-RMS columns
    mu0 = np.zeros(k)
    mu0[0] = 1.0
    if prior_mean is not None:
        mu0 = np.asarray(prior_mean, float).copy()
    mu0 = mu0 * rms  # into the scaled units

    def unpack(theta):  # theta = (W (L*K), b (L), mu (K))
        w = theta[: n_l * k].reshape(n_l, k)
        return w, theta[n_l * k : n_l * k + n_l], theta[n_l * k + n_l :]

    def objective(theta):
        w, b, mu = unpack(theta)
        z = (z_x * w[labeller]).sum(1) + (b[labeller] if fit_bias else 0.0)  # (N,)
        nll = -_log_sigmoid(sign * z).sum()
        prior = 0.5 * (((w - mu) / tau) ** 2).sum() + 0.5 * ((b / bias_scale) ** 2).sum()
        prior += 0.5 * ((mu - mu0) ** 2).sum()
        dz = -sign / (1.0 + np.exp(sign * z))  # d nll / d z = -s sigmoid(-s z)
        g_w = np.zeros((n_l, k))
        np.add.at(g_w, labeller, dz[:, None] * z_x)
        g_w += (w - mu) / tau**2
        g_b = (np.bincount(labeller, dz, minlength=n_l) if fit_bias else np.zeros(n_l)) + b / bias_scale**2
        g_mu = -((w - mu) / tau**2).sum(0) + (mu - mu0)
        return nll + prior, np.concatenate([g_w.ravel(), g_b, g_mu])

    theta0 = np.concatenate([np.tile(mu0, n_l), np.zeros(n_l), mu0])
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 5000})
    w, b, mu = unpack(result.x)
    # Laplace: each labeller's own block of the Hessian, sum p(1 - p) x x^T + I / tau^2
    z = (z_x * w[labeller]).sum(1) + (b[labeller] if fit_bias else 0.0)
    p = 1.0 / (1.0 + np.exp(-z))
    sd = np.empty(n_l)
    for i in range(n_l):
        rows = z_x[labeller == i]
        h = (rows * (p[labeller == i] * (1 - p[labeller == i]))[:, None]).T @ rows + np.eye(k) / tau**2
        sd[i] = np.sqrt(np.linalg.inv(h)[0, 0]) / rms[0]
    weights = w / rms  # back to the columns' own units
    fit = {
        "weights": weights,
        "rationality": weights[:, 0],
        "rationality_sd": sd,
        "bias": b,
        "panel_mean": mu / rms,
        "n_labels": np.bincount(labeller, minlength=n_l),
    }
    stats = {
        "quality/nll_per_label": float(-_log_sigmoid(sign * z).sum() / max(n, 1)),
        "quality/converged": float(result.success),
        "quality/iterations": float(result.nit),
    }
    return fit, stats


def objective_mixture(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Each labeller's share of |logit| per evidence column: |w_lk| * RMS_k / sum_k |w_lk| * RMS_k.
    weights (L, K) from `fit_quality`, features (N, K) the same evidence -> (L, K), rows summing to 1
    (a row of zeros for a labeller whose weights are all 0)."""
    rms = np.sqrt((np.asarray(features, float) ** 2).mean(0)) if len(features) else np.ones(weights.shape[1])
    part = np.abs(weights) * rms  # (L, K)
    total = part.sum(1, keepdims=True)
    return np.divide(part, total, out=np.zeros_like(part), where=total > 0)


def flag_off_target(
    mixture: np.ndarray, n_labels: np.ndarray, fraction: float = 0.6, min_labels: int = 10
) -> tuple[np.ndarray, dict[str, float]]:
    """Flag labellers whose answers the asked objective explains much less than it does the panel's:
    mixture[:, 0] (the target column's share, `objective_mixture`) below `fraction` of the median share
    of the labellers with at least `min_labels` labels. (L, K), (L,) -> (L,) bool.

    Why beside `reliability.flag_unreliable`: a labeller who judges by length keeps some rationality on
    the target wherever length and the target agree (on the demo's labels 0.67, against the careful
    labellers' median 0.99: not below 0.6 of it), but length explains most of their answers (61% against
    the careful labellers' 6-30%) and the target only 38% (the careful labellers' median 70%)."""
    judged = np.asarray(n_labels) >= min_labels
    share = np.asarray(mixture, float)[:, 0]
    median = float(np.median(share[judged])) if judged.any() else float("nan")
    flagged = judged & (share < fraction * median)
    return flagged, {
        "quality/median_target_share": median,
        "quality/flagged_off_target": float(flagged.sum()),
    }
