"""Labeller reliability: a Bradley-Terry model with a per-labeller rationality and position bias (numpy/scipy).

Each label n says which of two shown responses labeller l preferred. The model (the panel's own
labeller model, Bradley & Terry 1952 with a Boltzmann-rational labeller, cf. GLAD, Whitehill et al. 2009):

    P(left chosen) = sigmoid(beta_l * (u_left - u_right) + b_l)

u_i: latent quality of response i (shared by all labellers); beta_l: labeller l's rationality (inverse
temperature; ~0 for a labeller who answers at random, negative for one who answers against the others);
b_l: position bias (logit bonus for the left answer). We maximise the log-posterior with Gaussian priors
u ~ N(0, 1) (fixes the scale that beta multiplies), beta ~ N(1, 1), b ~ N(0, 1) by L-BFGS, with the
analytic gradient. Responses compared by several labellers (directly or through shared responses) are
what make beta identifiable: collect some overlap (e.g. 3 labels on a share of the pairs).

Binary labels (thumbs up / down on one response) enter the same model as a comparison of the response
with the labeller's own bar: `binary_as_comparisons` turns "labeller l called item i good" into "i beat
t_l", where t_l is one extra latent item per labeller (its threshold, prior N(0, 1) like any item):

    P(good) = sigmoid(beta_l * (u_i - t_l))

which is the panel's binary answer model (`Labeller.judge`) with the threshold made a parameter: a
lenient labeller (low t_l) is told apart from a careless one (low beta_l), and both kinds of label can be
fitted together, sharing u. Fit binary labels with `fit_bias=False`: the threshold item is always on the
right, so a position bias b_l would only duplicate t_l. (In the panel a binary answer reads one noisy
perception, half the variance of a comparison's difference, so beta_l fitted on binary labels alone comes
out about sqrt(2) times the comparison beta; flagging compares labellers with each other, which this
common factor does not change.)

Weights for the reward-model loss: near a decision boundary the gradient of log sigmoid(beta * d) in d is
beta / 2, so a label of labeller l carries beta_l times the signal of a beta = 1 label; the weight is
max(beta_l, 0) normalised to mean 1 over the labels, floored at `min_weight` (the data format needs > 0).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def fit_reliability(
    left: np.ndarray,
    right: np.ndarray,
    labeller: np.ndarray,
    chose_left: np.ndarray,
    n_items: int,
    n_labellers: int,
    fit_bias: bool = True,
    prior_beta: float = 1.0,
    prior_scale: float = 1.0,
    item_scale: float = 1.0,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit the model above to N labels (ties left out by the caller).

    left, right (N,) item indices as shown (left first); labeller (N,) labeller index; chose_left (N,)
    bool. With `fit_bias=False` (positions unknown, e.g. a chosen/rejected file) b_l stays 0.
    Returns ({"rationality": (L,), "bias": (L,), "scores": (I,), "n_labels": (L,)}, stats)."""
    left, right, labeller = (np.asarray(a, dtype=np.int64) for a in (left, right, labeller))
    sign = np.where(np.asarray(chose_left, bool), 1.0, -1.0)  # (N,)
    n_l = n_labellers

    def unpack(theta):  # theta = (u (I,), beta (L,), b (L,))
        return theta[:n_items], theta[n_items : n_items + n_l], theta[n_items + n_l :]

    def objective(theta):
        u, beta, bias = unpack(theta)
        d = u[left] - u[right]  # (N,)
        z = beta[labeller] * d + (bias[labeller] if fit_bias else 0.0)
        nll = -_log_sigmoid(sign * z).sum()
        var = prior_scale**2
        prior = 0.5 * (
            (u**2).sum() / item_scale**2 + (((beta - prior_beta) ** 2).sum() + (bias**2).sum()) / var
        )
        dz = -sign / (1.0 + np.exp(sign * z))  # d nll / d z = -s * sigmoid(-s z)
        g_u = np.zeros(n_items)
        np.add.at(g_u, left, dz * beta[labeller])
        np.add.at(g_u, right, -dz * beta[labeller])
        g_beta = np.bincount(labeller, dz * d, minlength=n_l)
        g_bias = np.bincount(labeller, dz, minlength=n_l) if fit_bias else np.zeros(n_l)
        grad = np.concatenate(
            [g_u + u / item_scale**2, g_beta + (beta - prior_beta) / var, g_bias + bias / var]
        )
        return nll + prior, grad

    theta0 = np.concatenate([np.zeros(n_items), np.full(n_l, prior_beta), np.zeros(n_l)])
    # u = 0 is a saddle (no gradient reaches beta); a small start from each item's win rate breaks it
    wins = np.bincount(left, sign, minlength=n_items) - np.bincount(right, sign, minlength=n_items)
    seen = np.bincount(left, minlength=n_items) + np.bincount(right, minlength=n_items)
    theta0[:n_items] = 0.1 * wins / np.maximum(seen, 1)
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    u, beta, bias = unpack(result.x)
    n_labels = np.bincount(labeller, minlength=n_l)
    fit = {"rationality": beta, "bias": bias, "scores": u, "n_labels": n_labels}
    stats = {
        "reliability/nll_per_label": float(result.fun / max(len(left), 1)),
        "reliability/converged": float(result.success),
        "reliability/iterations": float(result.nit),
    }
    return fit, stats


def binary_as_comparisons(
    item: np.ndarray, labeller: np.ndarray, good: np.ndarray, n_items: int, n_labellers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Binary labels as comparisons for `fit_reliability`: item (N,) index of the judged response,
    labeller (N,), good (N,) bool -> (left, right, labeller, chose_left, n_items + n_labellers), where
    left = the item, right = the labeller's threshold item n_items + l, chose_left = good. The fitted
    "scores" then hold the items' u (first n_items) and the labellers' thresholds t_l (the rest).
    Comparisons of the same items may be appended to these arrays and fitted jointly."""
    item, labeller = np.asarray(item, dtype=np.int64), np.asarray(labeller, dtype=np.int64)
    if len(item) and (item.min() < 0 or item.max() >= n_items):
        raise ValueError(f"item indices must be in [0, {n_items})")
    return item, n_items + labeller, labeller, np.asarray(good, bool), n_items + n_labellers


def flag_unreliable(
    rationality: np.ndarray, n_labels: np.ndarray, fraction: float = 0.6, min_labels: int = 10
) -> tuple[np.ndarray, dict[str, float]]:
    """A labeller is flagged when their rationality is below `fraction` of the median of the labellers
    with at least `min_labels` labels (fewer labels: not judged). (L,) -> (L,) bool. A flag asks for a
    human review, so it errs towards flagging: on the default panel with 30% spammers and ~120 labels
    each, spammers came out at 0.05-0.6 of the median and gold labellers at 0.85-1.15 of it."""
    judged = n_labels >= min_labels
    median = float(np.median(rationality[judged])) if judged.any() else float("nan")
    flagged = judged & (rationality < fraction * median)
    return flagged, {"reliability/median_rationality": median, "reliability/flagged": float(flagged.sum())}


def label_weights(
    rationality: np.ndarray, labeller: np.ndarray, min_weight: float = 0.02, power: float = 1.0
) -> tuple[np.ndarray, dict[str, float]]:
    """Per-label weights max(beta_l, 0)^power, normalised to mean 1 over the labels, floored at
    `min_weight`. rationality (L,), labeller (N,) -> (N,)."""
    raw = np.maximum(np.asarray(rationality, float)[labeller], 0.0) ** power  # (N,)
    mean = raw.mean() if len(raw) and raw.mean() > 0 else 1.0
    w = np.maximum(raw / mean, min_weight)
    return w, {"reliability/weight_min": float(w.min()) if len(w) else float("nan"),
               "reliability/weight_max": float(w.max()) if len(w) else float("nan")}  # fmt: skip
