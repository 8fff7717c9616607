"""Inter-labeller agreement statistics (pure numpy): Cohen's kappa, Fleiss' kappa, Krippendorff's alpha,
agreement with gold.

Every function takes arrays and returns ``(value, stats)``. Label arrays are integer codes; a missing
answer is ``MISSING`` (-2) or NaN. Where a statistic is undefined on the table given (no shared items, one
rater, every answer the same category: chance agreement 1 and 0/0), the value is NaN and
``stats["<name>/undefined"]`` says why, in words; no table makes these functions raise. Pairwise answers use the panel's codes (0 = left, 1 = right, -1 = tie), so
their natural level of measurement is *nominal*, and so is a binary (thumbs up / down) label, coded 1 = good,
0 = bad (`nominal_agreement` gives percent agreement, Fleiss' kappa and nominal alpha at once); Likert
ratings (1..7) are *ordinal*. Krippendorff's
alpha depends on that level -- the `krippendorff` package defaults to "interval", which on A/B/tie codes
would treat "tie" as twice as far from "right" as "left" is -- so here the level is a required argument.

References (the tests reproduce their worked examples):
- Cohen (1960); Wikipedia "Cohen's kappa": 50 proposals, 20 yes/yes, 15 no/no -> kappa = 0.4.
- Fleiss (1971); Wikipedia "Fleiss' kappa": 10 subjects x 14 raters x 5 categories -> kappa = 0.210.
- Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers x 12 units ->
  nominal 0.743, ordinal 0.815, interval 0.849.
"""

from __future__ import annotations

import numpy as np

MISSING = -2  # code for "this labeller did not answer this item"
LEVELS = ("nominal", "ordinal", "interval")
Stats = dict[str, float | str]


def as_table(labels, dtype=None) -> np.ndarray:
    """`labels` as an (L, I) array: a 1-D array is one labeller's answers; any empty input is (0, 0)."""
    x = np.asarray(labels, dtype=dtype)
    if x.size == 0:
        return x.reshape(x.shape if x.ndim == 2 else (0, 0))
    return x.reshape(1, -1) if x.ndim == 1 else x


def answered(x: np.ndarray) -> np.ndarray:
    """Mask of the entries of `x` that are answers: neither MISSING nor NaN (a float table's gap)."""
    x = np.asarray(x)
    return (x != MISSING) & ~np.isnan(x) if x.dtype.kind == "f" else x != MISSING


def undefined(name: str, reason: str, **stats: float) -> tuple[float, Stats]:
    """NaN for statistic `name`, with the reason in `stats[name + "/undefined"]` (and any counts)."""
    return float("nan"), {**{f"{name}/{k}": float(v) for k, v in stats.items()}, f"{name}/undefined": reason}


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> tuple[float, Stats]:
    """Cohen's kappa of two labellers over the items both answered: (p_o - p_e) / (1 - p_e), with p_e
    from each labeller's own marginal distribution. a, b: (I,) codes (MISSING or NaN skipped). Undefined (NaN)
    with no item answered by both, or when both gave one and the same category throughout (p_e = 1)."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    both = answered(a) & answered(b)
    a, b = a[both], b[both]
    n = len(a)
    if n == 0:
        return undefined("kappa", "no item was answered by both labellers", n=0)
    cats = np.union1d(a, b)
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    stats: Stats = {"kappa/observed": p_o, "kappa/expected": p_e, "kappa/n": float(n)}
    if p_e >= 1.0:
        return undefined("kappa", f"both labellers gave one answer (code {cats[0].item()}) on every shared item, so chance "
                         "agreement is 1 and kappa is 0/0", observed=p_o, expected=p_e, n=n)  # fmt: skip
    return (p_o - p_e) / (1.0 - p_e), stats


def pairwise_cohen_kappa(labels: np.ndarray) -> tuple[np.ndarray, Stats]:
    """Cohen's kappa for every two labellers. labels (L, I) -> (L, L) (diagonal 1, NaN where undefined);
    stats["kappa/mean"] is the mean over the distinct pairs where kappa is defined (NaN if none)."""
    labels = as_table(labels)
    n_labellers = labels.shape[0]
    out = np.eye(n_labellers)
    for i in range(n_labellers):
        for j in range(i + 1, n_labellers):
            out[i, j] = out[j, i] = cohen_kappa(labels[i], labels[j])[0]
    off = out[~np.eye(n_labellers, dtype=bool)]
    if not np.isfinite(off).any():
        reason = ("fewer than two labellers" if n_labellers < 2
                  else "kappa is undefined for every two labellers (no shared items, or one category)")  # fmt: skip
        return out, {"kappa/mean": float("nan"), "kappa/undefined": reason}
    return out, {"kappa/mean": float(np.nanmean(off))}


def category_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels (L, I) codes -> (counts (I, C), categories (C,)): how many labellers gave each category."""
    labels = as_table(labels)
    cats = np.unique(labels[answered(labels)])
    counts = (
        np.stack([(labels == c).sum(axis=0) for c in cats], axis=1)
        if len(cats)
        else np.zeros((labels.shape[1], 0))
    )
    return counts.astype(float), cats


def fleiss_kappa(counts: np.ndarray) -> tuple[float, Stats]:
    """Fleiss' kappa from counts (I, C): counts[i, c] = raters putting item i in category c; every item
    must have the same number n of raters (Fleiss 1971). kappa = (P_bar - P_e) / (1 - P_e), with
    P_i = (sum_c n_ic^2 - n) / (n (n - 1)) and P_e = sum_c p_c^2. Undefined (NaN) with no items, fewer
    than 2 raters, unequal raters per item (use Krippendorff's alpha), or one category throughout."""
    counts = as_table(counts, float)
    n = counts.sum(axis=1)  # (I,)
    if len(n) == 0:
        return undefined("fleiss", "no items", items=0)
    if not np.all(n == n[0]):
        return undefined("fleiss", f"items have {int(n.min())} to {int(n.max())} raters; Fleiss' kappa "
                         "needs the same number on every item (Krippendorff's alpha does not)", items=len(n))  # fmt: skip
    if n[0] < 2:
        return undefined("fleiss", f"{int(n[0])} rater per item; agreement needs at least 2", items=len(n))
    n = n[0]
    p_c = counts.sum(axis=0) / counts.sum()  # (C,)
    p_i = ((counts**2).sum(axis=1) - n) / (n * (n - 1))  # (I,)
    p_bar, p_e = float(p_i.mean()), float((p_c**2).sum())
    if p_e >= 1.0:
        return undefined("fleiss", "every rating is the same category, so chance agreement is 1 and "
                         "kappa is 0/0", observed=p_bar, expected=p_e, items=len(counts))  # fmt: skip
    kappa = (p_bar - p_e) / (1.0 - p_e)
    return kappa, {"fleiss/observed": p_bar, "fleiss/expected": p_e, "fleiss/items": float(len(counts))}


def _delta2(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    """Squared distance between categories (C, C) (Krippendorff 2011, sec. 'difference functions').
    Ordinal: (sum of the marginals from c to k, minus half of the two ends)^2."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    cum = np.concatenate([[0.0], np.cumsum(n_c)])  # ranks of the categories, in the sorted order
    lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
    hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    between = cum[hi + 1] - cum[lo]  # sum of n_g for g from lo to hi inclusive
    return (between - (n_c[lo] + n_c[hi]) / 2.0) ** 2


def krippendorff_alpha(labels: np.ndarray, level: str) -> tuple[float, Stats]:
    """Krippendorff's alpha = 1 - D_o / D_e from the coincidence matrix (Krippendorff 2011).
    labels (L, I) numeric codes, MISSING (or NaN) = no answer; items with fewer than 2 answers are
    dropped (they are not pairable). `level`: "nominal" (A/B/tie), "ordinal" (Likert) or "interval".
    For nominal pairwise answers, pass the codes 0/1/-1 as they are: the level makes the values names.
    Undefined (NaN) when no item has 2 answers, or when every pairable answer is the same value: then
    D_e = 0 and alpha is 0/0: data without variation cannot show whether the labellers could agree."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    x = as_table(labels, float)  # (L, I)
    x = np.where(x == MISSING, np.nan, x)
    values = np.unique(x[~np.isnan(x)])  # (C,) sorted
    index = {v: k for k, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))  # (C, C)
    for column in x.T:
        present = column[~np.isnan(column)]
        m = len(present)
        if m < 2:
            continue
        counts = np.bincount([index[v] for v in present], minlength=len(values)).astype(float)
        # every ordered pair of answers from different labellers, weighted 1 / (m_u - 1)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = coincidence.sum(axis=1)  # (C,) pairable values per category
    n = n_c.sum()
    if n == 0:
        return undefined("alpha", "no item was answered by 2 or more labellers", pairable=0)
    if np.count_nonzero(n_c) < 2:
        value = values[np.flatnonzero(n_c)[0]]
        return undefined("alpha", f"every item answered by 2 or more labellers got the same answer (code "
                         f"{value:g}) from all of them, so the expected disagreement is 0 and alpha is 0/0",
                         pairable=n)  # fmt: skip
    d2 = _delta2(values, n_c, level)
    d_o = float((coincidence * d2).sum() / n)
    d_e = float((np.outer(n_c, n_c) * d2).sum() / (n * (n - 1)))
    return 1.0 - d_o / d_e, {"alpha/observed_disagreement": d_o, "alpha/expected_disagreement": d_e,
                             "alpha/pairable": float(n)}  # fmt: skip


def percent_agreement(labels: np.ndarray) -> tuple[float, Stats]:
    """Raw agreement: over every item answered by 2 or more labellers, the share of the pairs of its
    labellers who gave the same answer (pairs pooled over items, so an item with m answers counts
    m (m - 1) / 2 pairs). labels (L, I) codes, MISSING or NaN = no answer. Example: items answered
    (1, 1, 0) and (0, 0, 0) -> (1 + 3) / (3 + 3) = 2/3. Undefined (NaN) when no item has 2 answers."""
    x = as_table(labels)
    agree = pairs = 0.0
    for column in x.T:
        present = column[answered(column)]
        m = len(present)
        if m < 2:
            continue
        _, counts = np.unique(present, return_counts=True)
        agree += float((counts * (counts - 1)).sum()) / 2
        pairs += m * (m - 1) / 2
    if pairs == 0:
        return undefined("percent", "no item was answered by 2 or more labellers", pairs=0)
    return agree / pairs, {"percent/agreement": agree / pairs, "percent/pairs": pairs}


def nominal_agreement(labels: np.ndarray) -> tuple[float, Stats]:
    """Percent agreement, Fleiss' kappa and Krippendorff's alpha (nominal) of one (L, I) table of nominal
    codes, e.g. binary labels (1 = good, 0 = bad, MISSING = not asked). Items with fewer than 2 answers
    are left out of all three. Returns (alpha, stats with every statistic's figures and any reason one
    is undefined); Fleiss' kappa is undefined unless every such item has the same number of answers."""
    x = as_table(labels)
    shared = answered(x).sum(axis=0) >= 2 if x.size else np.zeros(0, bool)  # (I,)
    x = x[:, shared] if x.size else x
    percent, stats = percent_agreement(x)
    counts, _ = category_counts(x) if x.size else (np.zeros((0, 0)), None)
    fleiss, fleiss_stats = fleiss_kappa(counts)
    alpha, alpha_stats = krippendorff_alpha(x, "nominal")
    stats = {**stats, **fleiss_stats, **alpha_stats, "percent/agreement": percent, "fleiss/kappa": fleiss,
             "alpha/nominal": alpha, "nominal/items": float(shared.sum())}  # fmt: skip
    return alpha, stats


def agreement_with_gold(
    labels: np.ndarray, gold: np.ndarray, skip: tuple[int, ...] = (-1,)
) -> tuple[np.ndarray, Stats]:
    """Per labeller, the share of answered items where the answer equals gold, skipping items where the
    answer or gold is in `skip` (ties, by default) or missing. labels (L, I), gold (I,) -> (L,); NaN for
    a labeller with no such item, and stats["gold/agreement"] NaN (with the reason) when none has one."""
    gold = np.asarray(gold).reshape(-1)
    labels = as_table(labels) if np.size(labels) else np.zeros((0, len(gold)), int)  # (L, I)
    valid = answered(labels) & ~np.isin(labels, skip) & (answered(gold) & ~np.isin(gold, skip))[None, :]
    n = valid.sum(axis=1)
    per = np.where(n > 0, ((labels == gold[None, :]) & valid).sum(axis=1) / np.maximum(n, 1), np.nan)
    if not n.any():
        return per, {"gold/agreement": float("nan"), "gold/n": 0.0,
                     "gold/undefined": "no answered item with a decided answer and a decided gold"}  # fmt: skip
    return per, {"gold/agreement": float(np.nanmean(per)), "gold/n": float(n.sum())}


def majority_vs_gold(labels: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, Stats]:
    """The labellers' majority per item (ties among the votes and tie answers -> -1) and where it
    disagrees with gold. labels (L, I) pairwise codes, gold (I,) -> (majority (I,), stats); stats counts
    the items with a decided majority and a decided gold, and the share of them that disagree (NaN, with
    the reason, when no item is decided)."""
    gold = np.asarray(gold).reshape(-1)
    labels = as_table(labels) if np.size(labels) else np.zeros((0, len(gold)), int)  # (L, I)
    n0 = (labels == 0).sum(axis=0)
    n1 = (labels == 1).sum(axis=0)
    majority = np.where(n0 > n1, 0, np.where(n1 > n0, 1, -1))
    decided = (majority != -1) & (gold != -1) & answered(gold)
    disagree = decided & (majority != gold)
    if not decided.any():
        return majority, {"gold/majority_decided": 0.0, "gold/majority_disagreement": float("nan"),
                          "gold/undefined": "no item has both a majority and a decided gold"}  # fmt: skip
    return majority, {"gold/majority_decided": float(decided.sum()),
                      "gold/majority_disagreement": float(disagree.sum() / decided.sum())}  # fmt: skip
