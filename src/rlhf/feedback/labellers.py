"""Labeller reports on preference files: reliability and weights, agreement, researcher-labeller disagreement.

`reliability_report(rows)` fits `reliability.fit_reliability` to the pair rows of a preference file
(``prompt, chosen, rejected, labeller_id`` and, when known, ``chosen_position``: 0 if the chosen
response was shown first/left, 1 if second -- without it the position bias is not fitted) and the
unpaired rows of binary labels (``prompt, completion, label, labeller_id``: the response against the
labeller's own bar, `reliability.binary_as_comparisons`); each distinct (prompt, response) is an item. `weighted_rows` writes each row's labeller weight into the
``weight`` field the reward trainer honours. `flag_in_store` marks flagged labellers in the feedback
store, where the admin dashboard shows them. `disagreement_report` groups the labels of each pair and
lists the pairs where the labellers' majority disagrees with the gold judge (the world's hidden
utility, or any `gold_fn`). `reliability_experiment` measures what the weights buy on the toy world.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from rlhf.feedback.agreement import MISSING, agreement_with_gold, krippendorff_alpha
from rlhf.feedback.reliability import binary_as_comparisons, fit_reliability, flag_unreliable, label_weights


def _pairs_only(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "chosen" in r and "rejected" in r and r.get("labeller_id") is not None]


def _binary_only(rows: list[dict]) -> list[dict]:
    return [
        r
        for r in rows
        if "completion" in r and isinstance(r.get("label"), bool) and r.get("labeller_id") is not None
    ]


def reliability_report(
    rows: list[dict[str, Any]], flag_fraction: float = 0.6, power: float = 1.0, drop_flagged: bool = True
) -> dict[str, Any]:
    """Per-labeller rationality, position bias, label count, flag and weight (see the module docstring).
    With `drop_flagged` a flagged labeller's rationality counts as 0 in the weights (weight = the floor):
    the usual crowdsourcing practice of setting suspected spammers aside, rather than trusting a
    rationality estimated from ~100 labels."""
    binary = _binary_only(rows)
    rows = [r for r in _pairs_only(rows) if not r.get("tie")]
    if not rows and not binary:
        return {"labellers": [], "n_labels": 0}
    names = sorted({str(r["labeller_id"]) for r in rows + binary})
    items: dict[tuple[str, str], int] = {}
    # with binary rows the bar item is always on the right: a position bias would only duplicate the bar
    positions_known = bool(rows) and not binary and all("chosen_position" in r for r in rows)
    left, right, chose_left = [], [], []
    for r in rows:
        c = items.setdefault((r["prompt"], r["chosen"]), len(items))
        o = items.setdefault((r["prompt"], r["rejected"]), len(items))
        first = not positions_known or int(r["chosen_position"]) == 0
        left.append(c if first else o)
        right.append(o if first else c)
        chose_left.append(first)
    judged = [items.setdefault((r["prompt"], r["completion"]), len(items)) for r in binary]
    n_responses = len(items)
    labeller = np.array([names.index(str(r["labeller_id"])) for r in rows + binary], dtype=np.int64)
    if binary:  # after the pairs: labeller l's bar is item n_responses + l
        b_left, b_right, _, b_good, _ = binary_as_comparisons(
            np.array(judged),
            labeller[len(rows) :],
            np.array([r["label"] for r in binary]),
            n_responses,
            len(names),
        )
        left, right, chose_left = (
            left + b_left.tolist(),
            right + b_right.tolist(),
            chose_left + b_good.tolist(),
        )
    fit, stats = fit_reliability(
        np.array(left, dtype=np.int64),
        np.array(right, dtype=np.int64),
        labeller,
        np.array(chose_left, dtype=bool),
        n_responses + (len(names) if binary else 0),
        len(names),
        positions_known,
    )
    # a comparison answered by two or more labellers ties their rationalities together; on one nobody
    # else answered, any labeller's answer can be explained by the free utilities (not identified);
    # likewise a response that two labellers judged good or bad
    comparison = [(r["prompt"], frozenset((r["chosen"], r["rejected"]))) for r in rows]
    comparison += [(r["prompt"], r["completion"]) for r in binary]
    answered_by: dict[Any, set[int]] = {}
    for key, who in zip(comparison, labeller.tolist(), strict=True):
        answered_by.setdefault(key, set()).add(who)
    shared = np.array([len(answered_by[key]) > 1 for key in comparison])
    flagged, more = flag_unreliable(fit["rationality"], fit["n_labels"], fraction=flag_fraction)
    trusted = np.where(flagged, 0.0, fit["rationality"]) if drop_flagged else fit["rationality"]
    per_label, _ = label_weights(trusted, labeller, power=power)  # mean 1 over the labels
    weight = dict(zip(labeller.tolist(), per_label.tolist(), strict=True))
    return {
        "n_labels": len(rows) + len(binary),
        "n_binary_labels": len(binary),
        "n_items": n_responses,
        "position_bias_fitted": positions_known,
        "shared_labels": int(shared.sum()),  # labels on comparisons another labeller also answered
        **stats,
        **more,
        "labellers": [
            {
                "labeller_id": name,
                "rationality": float(fit["rationality"][i]),
                "position_bias": float(fit["bias"][i]),
                "n_labels": int(fit["n_labels"][i]),
                "shared_labels": int(shared[labeller == i].sum()),
                "flagged": bool(flagged[i]),
                "weight": float(weight[i]),
            }
            for i, name in enumerate(names)
        ],
    }


def weighted_rows(rows: list[dict[str, Any]], report: dict[str, Any], min_weight: float = 0.02) -> list[dict]:
    """Rows with `weight` = their labeller's weight times any weight already there (labellers the report
    does not know keep weight 1)."""
    by_name = {row["labeller_id"]: row["weight"] for row in report["labellers"]}
    out = []
    for r in rows:
        w = by_name.get(str(r.get("labeller_id")), 1.0)
        out.append({**r, "weight": max(float(r.get("weight", 1.0)) * w, min_weight)})
    return out


def flag_in_store(store, names: list[str]) -> int:
    """Mark these labellers flagged in the feedback store (the admin dashboard lists them); returns how many."""
    from sqlalchemy import update

    from rlhf.feedback.models import Labeller

    if not names:
        return 0
    with store.transaction() as s:
        return s.execute(update(Labeller).where(Labeller.name.in_(names)).values(flagged=True)).rowcount


def world_gold(prompt: str, response: str) -> float:
    from rlhf.world import gold

    return gold.utility(prompt, response)


def disagreement_report(
    rows: list[dict[str, Any]], gold_fn: Callable[[str, str], float] = world_gold, examples: int = 10
) -> dict[str, Any]:
    """Group pair labels by (prompt, {a, b}); where the labellers' majority (ties excluded, even splits
    undecided) prefers the response gold ranks lower, list it. Also per-labeller agreement with gold and
    Krippendorff's alpha (nominal) over the grouped labels. A figure that is undefined (no decided pair,
    one shared answer throughout) is NaN; `krippendorff_alpha_undefined` says why alpha is."""
    groups: dict[tuple, list[tuple[str, int]]] = defaultdict(list)
    names = sorted({str(r["labeller_id"]) for r in _pairs_only(rows)})
    for r in _pairs_only(rows):
        a, b = sorted((r["chosen"], r["rejected"]))
        vote = -1 if r.get("tie") else (0 if r["chosen"] == a else 1)
        groups[(r["prompt"], a, b)].append((str(r["labeller_id"]), vote))
    keys = list(groups)
    labels = np.full((len(names), len(keys)), MISSING)  # (L, pairs): 0 = a, 1 = b, -1 = tie
    for j, key in enumerate(keys):
        for name, vote in groups[key]:
            labels[names.index(name), j] = vote
    utilities = np.array([[gold_fn(p, a), gold_fn(p, b)] for p, a, b in keys]).reshape(-1, 2)
    gold = np.where(
        np.isclose(utilities[:, 0], utilities[:, 1]), -1, np.where(utilities[:, 0] > utilities[:, 1], 0, 1)
    )
    per, gold_stats = agreement_with_gold(labels, gold)
    n0, n1 = (labels == 0).sum(0), (labels == 1).sum(0)
    majority = np.where(n0 > n1, 0, np.where(n1 > n0, 1, -1))
    decided = (majority != -1) & (gold != -1)
    wrong = np.flatnonzero(decided & (majority != gold))
    wrong = wrong[np.argsort(-np.abs(utilities[wrong, 0] - utilities[wrong, 1]))]  # clearest gold calls first
    alpha, alpha_stats = krippendorff_alpha(labels, "nominal")
    return {
        "pairs": len(keys),
        "majority_decided": int(decided.sum()),
        "majority_disagrees_with_gold": int(len(wrong)),
        "disagreement_rate": float(len(wrong) / decided.sum()) if decided.any() else float("nan"),
        "krippendorff_alpha_nominal": alpha,  # NaN when undefined; the reason in the next field
        "krippendorff_alpha_undefined": alpha_stats.get("alpha/undefined"),
        "agreement_with_gold": gold_stats["gold/agreement"],
        "labellers": {name: float(per[i]) for i, name in enumerate(names)},
        "examples": [
            {
                "prompt": keys[j][0],
                "majority_preferred": keys[j][1 + majority[j]],
                "gold_preferred": keys[j][1 + gold[j]],
                "gold_utility_gap": float(abs(utilities[j, 0] - utilities[j, 1])),
                "votes": groups[keys[j]],
            }
            for j in wrong[:examples]
        ],
    }


# ----------------------------------------------------------------------------- experiment


def noisy_panel_labels(seed: int, n_pairs: int, labels_per_pair: int = 3) -> tuple[list, list[dict]]:
    """Corpus pairs labelled by `labels_per_pair` distinct labellers of a panel with 30% spammers and 10%
    other-objective (length) labellers; rows in the preference format plus `chosen_position`."""
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import PanelConfig, make_panel

    panel = make_panel(
        PanelConfig(seed=seed, n_labellers=10, n_spammers=3, n_length_biased=1, n_refusal_preferring=0)
    )
    rng = np.random.default_rng([seed, 7])
    pairs = sample_pairs(n_pairs, 20_000 + seed)
    rows = []
    for prompt, a, b in pairs:
        for j in rng.choice(len(panel), labels_per_pair, replace=False):
            lab = panel.labellers[j]
            c = lab.compare(prompt, a, b, rng)
            chosen, rejected = (b, a) if c.choice == 1 else (a, b)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "labeller_id": lab.spec.name,
                         "tie": c.choice is None, "chosen_position": 1 if c.choice == 1 else 0,
                         "kind": lab.spec.kind})  # fmt: skip
    return pairs, rows


def reliability_experiment(
    seeds: int = 3,
    n_pairs: int = 700,
    labels_per_pair: int = 3,
    train: str = "heads",
    power: float = 1.0,
    epochs: float = 3.0,
    test_size: int = 1000,
    world=None,
    log=print,
) -> dict[str, Any]:
    """Reward-model gold accuracy with and without reliability weights, per seed (same labels, same model
    seed), on the noisy panel of `noisy_panel_labels`; also where the spammers rank."""
    from rlhf.active import ActiveConfig, Labels, Scorer, gold_test_set, pair_accuracy, pair_texts
    from rlhf.data import join_prompt_response
    from rlhf.world.report import resolve_world_model

    cfg = ActiveConfig(train=train, test_size=test_size, epochs=epochs)
    scorer = Scorer(cfg, resolve_world_model(cfg.model, world, show_progress=False))
    test_pairs, test_gold = gold_test_set(cfg.test_size)
    test_texts, test_ab = pair_texts(test_pairs)
    runs = []
    for seed in range(seeds):
        pairs, rows = noisy_panel_labels(seed, n_pairs, labels_per_pair)
        report = reliability_report(rows, power=power)
        text_index: dict[str, int] = {}
        labels = Labels()
        for r in rows:
            c = text_index.setdefault(join_prompt_response(r["prompt"], r["chosen"]), len(text_index))
            o = text_index.setdefault(join_prompt_response(r["prompt"], r["rejected"]), len(text_index))
            item = (r["prompt"], r["chosen"], r["rejected"])
            labels.rows.append((item, None if r["tie"] else 0, r["labeller_id"]))
            labels.chosen.append(c)
            labels.rejected.append(o)
            labels.tie.append(bool(r["tie"]))
        weights = np.array([row["weight"] for row in weighted_rows(rows, report)])
        accuracy = {}
        for name, w in (("unweighted", np.ones(len(rows))), ("weighted", weights)):
            scorer.fit(list(text_index), labels, w, seed)
            accuracy[name] = pair_accuracy(scorer.score(test_texts)[0].mean(1), test_ab, test_gold)
        kinds = {r["labeller_id"]: r["kind"] for r in rows}
        ranked = sorted(report["labellers"], key=lambda x: x["rationality"])
        runs.append({"seed": seed, **accuracy,
                     "lowest_three": [kinds[x["labeller_id"]] for x in ranked[:3]],
                     "labellers": [{**x, "kind": kinds[x["labeller_id"]]} for x in ranked]})  # fmt: skip
        log(f"seed {seed}: gold accuracy unweighted {accuracy['unweighted']:.3f}, weighted {accuracy['weighted']:.3f}; "
            f"lowest rationality: {runs[-1]['lowest_three']}")  # fmt: skip
    return {
        "config": {
            "seeds": seeds,
            "n_pairs": n_pairs,
            "labels_per_pair": labels_per_pair,
            "train": train,
            "panel": "10 labellers: 3 spammers, 1 length-judging, 6 gold",
        },  # fmt: skip
        "mean_unweighted": float(np.mean([r["unweighted"] for r in runs])),
        "mean_weighted": float(np.mean([r["weighted"] for r in runs])),
        "runs": runs,
    }
