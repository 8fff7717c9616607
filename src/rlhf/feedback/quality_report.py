"""Labeller quality reports from a reward model: `rlhf feedback reliability --reward-model` and the loop.

`quality_report(rows, chosen_scores, rejected_scores, heads)` fits `quality.fit_quality` to the pair
rows of a preference file (``prompt, chosen, rejected, labeller_id``; ``objective`` names the reward
head the question asked for, e.g. "helpful" / "harmless", default the first head; ``chosen_position``
0/1 when the shown order is known, which alone lets a position bias be fitted). The utilities are the
reward model's (`score_rows`: the ensemble mean of each head, normalised on the reference samples when
the model holds them), shared by every response, so each labeller's rationality is identified from
their own labels: the free-utility fit of `reliability.fit_reliability` is not (a spammer there can
come out the most "rational" labeller of the panel). Flags and weights are those of the reliability
report (`reliability.flag_unreliable`, `reliability.label_weights`), plus a flag for a labeller whose
answers the asked objective explains much less than the panel's (`quality.flag_off_target`), so `labellers.weighted_rows` and
`labellers.flag_in_store` take either report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError
from rlhf.feedback.quality import fit_quality, flag_off_target, objective_mixture, pair_features
from rlhf.feedback.reliability import flag_unreliable, label_weights


def quality_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the quality model reads: pairs with a labeller, ties left out (a tie says nothing about
    which side the labeller's utility favours in this model)."""
    return [
        r
        for r in rows
        if "chosen" in r and "rejected" in r and r.get("labeller_id") is not None and not r.get("tie")
    ]


def score_rows(
    reward_dir: str | Path, rows: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The reward model's utilities of each row's chosen and rejected response: ((N, H), (N, H), head
    names), the ensemble mean per head, normalised with the model's stored reference statistics when it
    has them (so rationalities of different rounds' models are in the same units). Each distinct
    (prompt, response) is scored once. Raises UserError (one line) when `reward_dir` is no reward model."""
    from rlhf.reward_model import is_reward_model_dir, load_reward_model, score_texts
    from rlhf.sequences import scored_text

    path = Path(reward_dir).expanduser()
    if not path.is_dir() or not is_reward_model_dir(path):
        raise UserError(
            f"--reward-model {reward_dir}: not a reward-model directory (train one with `rlhf reward train`)"
        )
    model, tokenizer = load_reward_model(str(path), device="cpu")
    index: dict[tuple[str, str], int] = {}
    chosen = [index.setdefault((r["prompt"], r["chosen"]), len(index)) for r in rows]
    rejected = [index.setdefault((r["prompt"], r["rejected"]), len(index)) for r in rows]
    texts = [scored_text(tokenizer, p, y) for p, y in index]
    normalize = model.meta.norm_mean is not None and model.meta.norm_std is not None
    scores = score_texts(model, tokenizer, texts, normalize=normalize).mean.numpy()  # (T, H)
    scores = scores.reshape(len(texts), -1)
    return scores[chosen], scores[rejected], list(model.objectives)


def column_names(heads: list[str]) -> list[str]:
    """Names of `pair_features`' columns (length included): the asked objective, the other heads (in
    head order, the asked one left out: "other objective" when there are two heads), length."""
    others = (
        ["other objective"]
        if len(heads) == 2
        else [f"other objective {i + 1}" for i in range(len(heads) - 1)]
    )
    return ["asked objective", *others, "length"]


def quality_report(
    rows: list[dict[str, Any]],
    chosen_scores: np.ndarray,
    rejected_scores: np.ndarray,
    heads: list[str],
    flag_fraction: float = 0.6,
    drop_flagged: bool = True,
) -> dict[str, Any]:
    """Per-labeller rationality (± Laplace sd), position bias, objective mixture ("judges by": the share
    of |logit| each evidence column explains, `quality.objective_mixture`), label count, flag and label
    weight, from pair rows and their responses' reward-model utilities.

    rows (N) as `quality_pairs` keeps them; chosen_scores, rejected_scores (N, H) the utilities of each
    row's responses per head in `heads` order. A row's question is its ``objective`` when that names a
    head, else the first head. With ``chosen_position`` on every row the shown order is rebuilt and a
    position bias fitted; without it the chosen response goes left and no bias is fitted (it would be a
    free "agree" bonus). Flags: `reliability.flag_unreliable` (rationality below `flag_fraction` of the
    median) or `quality.flag_off_target` (the asked objective's share of the mixture below
    `flag_fraction` of the median share); weights: `reliability.label_weights` (max(beta, 0) normalised to mean 1 over the labels),
    a flagged labeller's at the floor when `drop_flagged`. Raises ValueError when the score arrays do
    not match the rows."""
    chosen_scores, rejected_scores = np.asarray(chosen_scores, float), np.asarray(rejected_scores, float)
    if chosen_scores.shape != rejected_scores.shape or len(chosen_scores) != len(rows):
        raise ValueError(f"{len(rows)} rows need (N, H) chosen and rejected scores, got {chosen_scores.shape} "
                         f"and {rejected_scores.shape}")  # fmt: skip
    if not rows:
        return {"labellers": [], "n_labels": 0, "columns": column_names(heads), "heads": list(heads)}
    names = sorted({str(r["labeller_id"]) for r in rows})
    labeller = np.array([names.index(str(r["labeller_id"])) for r in rows], dtype=np.int64)
    positions_known = all("chosen_position" in r for r in rows)
    chosen_left = np.array([not positions_known or int(r["chosen_position"]) == 0 for r in rows])  # (N,)
    target = np.array([heads.index(r["objective"]) if r.get("objective") in heads else 0 for r in rows])
    words_c = np.array([len(r["chosen"].split()) for r in rows], float)
    words_r = np.array([len(r["rejected"].split()) for r in rows], float)
    side = chosen_left[:, None]
    features = pair_features(
        np.where(side, chosen_scores, rejected_scores),
        np.where(side, rejected_scores, chosen_scores),
        target,
        np.where(chosen_left, words_c, words_r),
        np.where(chosen_left, words_r, words_c),
    )  # (N, K): left minus right
    fit, stats = fit_quality(features, labeller, chosen_left, len(names), fit_bias=positions_known)
    mixture = objective_mixture(fit["weights"], features)  # (L, K)
    low, more = flag_unreliable(fit["rationality"], fit["n_labels"], fraction=flag_fraction)
    off_target, off_stats = flag_off_target(mixture, fit["n_labels"], fraction=flag_fraction)
    flagged = low | off_target
    trusted = np.where(flagged, 0.0, fit["rationality"]) if drop_flagged else fit["rationality"]
    per_label, _ = label_weights(trusted, labeller)  # mean 1 over the labels
    weight = dict(zip(labeller.tolist(), per_label.tolist(), strict=True))
    columns = column_names(heads)
    return {
        "model": "reward-model utilities (rlhf.feedback.quality)",
        "n_labels": len(rows),
        "heads": list(heads),
        "columns": columns,
        "position_bias_fitted": positions_known,
        **stats,
        **more,
        **off_stats,
        "labellers": [
            {
                "labeller_id": name,
                "rationality": float(fit["rationality"][i]),
                "rationality_sd": float(fit["rationality_sd"][i]),
                "position_bias": float(fit["bias"][i]),
                "weights": dict(zip(columns, fit["weights"][i].tolist(), strict=True)),
                "judges_by": dict(zip(columns, mixture[i].tolist(), strict=True)),
                "n_labels": int(fit["n_labels"][i]),
                "flagged": bool(flagged[i]),
                "flag_reasons": [
                    reason
                    for reason, on in (
                        ("low rationality", low[i]),
                        ("judges by other evidence", off_target[i]),
                    )
                    if on
                ],  # fmt: skip
                "weight": float(weight.get(i, 1.0)),
            }
            for i, name in enumerate(names)
        ],
    }


def judges_by(row: dict[str, Any]) -> str:
    """'asked objective 71%, length 22%, ...': a labeller's objective mixture, largest share first."""
    shares = sorted(row["judges_by"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {share:.0%}" for name, share in shares)


def reward_model_report(
    rows: list[dict[str, Any]], reward_dir: str | Path, source: str = "the data"
) -> dict[str, Any]:
    """`quality_report` of a preference file's pair rows scored by the reward model in `reward_dir`
    (`score_rows`). Raises UserError (one line) when no pair row has a labeller_id or the directory is
    no reward model."""
    pairs = quality_pairs(rows)
    if not pairs:
        raise UserError(
            f"{source}: no pair rows (chosen, rejected, labeller_id, not a tie) for --reward-model to score; "
            "export comparisons with `rlhf label export --kind pairs`"
        )
    chosen, rejected, heads = score_rows(reward_dir, pairs)
    report = quality_report(pairs, chosen, rejected, heads)
    report["reward_model"] = str(reward_dir)
    report["rows_not_used"] = len(rows) - len(pairs)  # ties, binary rows, rows without a labeller
    return report
