"""Joint (query, labeller) acquisition: which comparison to ask, and whom to ask it (pure numpy).

`acquisition.bald` scores a query by what *a* label would tell about the reward model. Who answers
changes that: a spammer's answer tells nothing, a sharp labeller's a lot, and a labeller who judges by
length tells about length, not about the utility. Here each labeller l answers by the model that
`feedback.quality.fit_quality` fits to their past labels (observable evidence only):

    P_lm(left chosen) = sigmoid(beta_l * d_m + o_nl)

d_m (N, M) the utility difference (left - right) under ensemble member m, beta_l the labeller's
estimated rationality on the target utility, o_nl (N, L) the rest of their logit on query n: their
off-target weights times the off-target evidence (length, other heads) plus their position bias.

**Labeller-aware BALD** (Houlsby et al. 2011, with the labeller's answer model as the likelihood):
the mutual information between labeller l's answer and the ensemble member,

    I_nl = H[mean_m P_lm] - mean_m H[P_lm],

in nats. beta_l = 0 (a spammer, or a length judge once length is accounted for) gives P_lm the same for
every member, so I_nl = 0 whatever the query; a large beta_l sharpens every member's prediction and
raises it. The score of a (query, labeller) pair is I_nl per expected second of that labeller's time
on that query (`info_per_second`): the budget that runs out is labelling time, and labellers differ
in speed.

`assign` turns the (N, L) score into a batch: each query to at most one labeller, every labeller
between a floor and a cap of the batch (fairness: no one idle, no one flooded), greedily by score.
Repeats (a query asked again because its first answers disagree) are rows of the same score matrix
with the labellers who answered already masked out, so a repeat wins a slot only when it is worth more
than a fresh query.
"""

from __future__ import annotations

import numpy as np

from rlhf.feedback.acquisition import EPS, binary_entropy


def labeller_member_probs(
    member_diffs: np.ndarray, rationality: np.ndarray, offsets: np.ndarray | None = None
) -> np.ndarray:
    """P_lm(left chosen) = sigmoid(beta_l * d_m + o_nl). member_diffs (N, M) utility differences
    (left - right) per ensemble member; rationality (L,); offsets (N, L) or None (zero) -> (N, L, M)."""
    d = np.asarray(member_diffs, float)
    beta = np.asarray(rationality, float)
    z = beta[None, :, None] * d[:, None, :]  # (N, L, M)
    if offsets is not None:
        z = z + np.asarray(offsets, float)[:, :, None]
    return 1.0 / (1.0 + np.exp(-z))


def labeller_bald(
    member_diffs: np.ndarray, rationality: np.ndarray, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Mutual information I_nl = H[mean_m P_lm] - mean_m H[P_lm] (nats) between labeller l's answer to
    query n and the ensemble member (module docstring). member_diffs (N, M), rationality (L,), offsets
    (N, L) or None -> ((N, L), stats). E.g. members d = (-2, 2), beta = 1, no offset: P = (0.1192,
    0.8808), I = ln 2 - H(0.1192) = 0.6931 - 0.3653 = 0.3278; beta = 0: I = 0."""
    p = labeller_member_probs(member_diffs, rationality, offsets)  # (N, L, M)
    info = binary_entropy(p.mean(axis=2)) - binary_entropy(p).mean(axis=2)
    info = np.maximum(info, 0.0)  # rounding can make it -1e-17
    return info, {"routing/info_mean": float(info.mean()) if info.size else float("nan")}


def info_per_second(info: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The (query, labeller) score: information (N, L) nats per expected second (N, L) of that labeller on
    that query -> (N, L) nats per second. Raises ValueError on shapes that differ."""
    info, seconds = np.asarray(info, float), np.asarray(seconds, float)
    if info.shape != seconds.shape:
        raise ValueError(f"info {info.shape} and seconds {seconds.shape} must have the same (N, L) shape")
    score = info / np.maximum(seconds, EPS)
    return score, {"routing/nats_per_hour_mean": float(score.mean() * 3600) if score.size else float("nan")}


def fairness_bounds(batch: int, n_labellers: int, floor_share: float, cap_share: float) -> tuple[int, int]:
    """Per-labeller (floor, cap) task counts of a batch: floor = floor(floor_share * batch), lowered so
    that the floors fit in the batch; cap = ceil(cap_share * batch), raised so that the caps cover it.
    E.g. batch 250, 11 labellers, shares 0.02 and 0.25: floor 5 (55 in all), cap 63."""
    if n_labellers < 1:
        raise ValueError("need at least one labeller")
    floor = min(int(np.floor(floor_share * batch + 1e-9)), batch // n_labellers)
    cap = max(int(np.ceil(cap_share * batch - 1e-9)), -(-batch // n_labellers), floor)
    return floor, cap


def assign(
    score: np.ndarray,
    batch: int,
    floor: int = 0,
    cap: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float]]:
    """Pick `batch` (query, labeller) pairs from score (N, L) (-inf = not allowed), each query at most
    once, each labeller between `floor` and `cap` tasks:
    1. floors: the labellers take turns in index order, each taking its best free query, until every
       labeller has `floor` (or has no allowed query left);
    2. the rest of the batch: the best remaining (query, labeller) pairs overall, skipping taken queries
       and labellers at their cap.
    Ties are broken at random with `rng`, else by index. Returns ((queries (k,), labellers (k,)) in pick
    order, stats); k < batch only when the allowed pairs run out. Raises ValueError if floor > cap."""
    score = np.asarray(score, float)
    n, n_l = score.shape
    cap = batch if cap is None else cap
    if floor > cap:
        raise ValueError(f"fairness floor {floor} is above the cap {cap}")
    jitter = rng.random(score.shape) if rng is not None else np.zeros(score.shape)
    # one global order, best first: by score, then jitter, then index (lexsort's last key is primary)
    order = np.lexsort((np.arange(score.size), -jitter.ravel(), -score.ravel()))
    order = order[np.isfinite(score.ravel()[order])]
    queries, labellers = [], []
    taken = np.zeros(n, bool)
    count = np.zeros(n_l, np.int64)
    # 1. floors, in turns: each labeller's own best free query
    own = [order[order % n_l == lab] // n_l for lab in range(n_l)]  # queries per labeller, best first
    cursor = np.zeros(n_l, np.int64)
    for _ in range(floor):
        for lab in range(n_l):
            if len(queries) >= batch:
                break
            while cursor[lab] < len(own[lab]) and taken[own[lab][cursor[lab]]]:
                cursor[lab] += 1
            if cursor[lab] < len(own[lab]):
                q = int(own[lab][cursor[lab]])
                taken[q] = True
                count[lab] += 1
                queries.append(q)
                labellers.append(lab)
    floored = len(queries)
    # 2. the rest, best first
    for flat in order:
        if len(queries) >= batch:
            break
        q, lab = divmod(int(flat), n_l)
        if taken[q] or count[lab] >= cap:
            continue
        taken[q] = True
        count[lab] += 1
        queries.append(q)
        labellers.append(lab)
    picked = score[queries, labellers] if queries else np.zeros(0)
    stats = {
        "routing/floor_tasks": float(floored),
        "routing/score_batch": float(picked.mean()) if len(picked) else float("nan"),
        "routing/labellers_used": float((count > 0).sum()),
        "routing/max_share": float(count.max() / max(len(queries), 1)),
    }
    return (np.array(queries, np.int64), np.array(labellers, np.int64)), stats


def answers_disagree(choices: list[list[int]], predicted_left: np.ndarray) -> np.ndarray:
    """Which labelled queries are worth considering for a repeat: their answers so far split (some
    chose left, some right), or their one answer went against `predicted_left` (N,) bool, the prediction
    of a reward model that had not trained on it. choices: per query the answers so far (0 left, 1
    right; ties left out). -> (N,) bool. E.g. [[0, 1], [0], [1], []] with predictions (T, T, T, T) ->
    (True, False, True, False)."""
    out = np.zeros(len(choices), bool)
    for i, answers in enumerate(choices):
        if len(answers) >= 2:
            out[i] = len(set(answers)) > 1
        elif len(answers) == 1:
            out[i] = (answers[0] == 0) != bool(predicted_left[i])
    return out
