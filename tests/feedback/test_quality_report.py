"""Labeller quality from a reward model (rlhf.feedback.quality_report) at the demo's label counts, the
report's arithmetic, and `rlhf feedback reliability --reward-model`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from rlhf.feedback.quality_report import column_names, quality_report


def demo_label_counts():
    """(rounds, comparisons per round, harmless share, overlap share, labellers per overlapped
    comparison) of `rlhf demo`: its settings over the loop's defaults, read where the demo reads them."""
    from rlhf.config_root import load_root_config
    from rlhf.demo import DEMO_SETTINGS

    loop = load_root_config(None, list(DEMO_SETTINGS)).loop
    return loop.rounds, loop.labels_per_round, loop.harmless_share, loop.overlap_share, loop.overlap_labellers


def panel_rounds(seed: int):
    """The default panel labelling world pairs as the demo's loop asks them: per round, helpful pairs and
    (a harmless_share of) harmless pairs on risky requests; overlap_share of them to 3 different
    labellers, the rest to one; labellers take tasks in turns, as the queue's simulated labellers do.
    Rows as the store exports them (chosen first, objective, labeller_id; ties kept) plus `round`."""
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import PanelConfig, make_panel

    rounds, per_round, harmless_share, overlap_share, overlap_k = demo_label_counts()
    panel = make_panel(PanelConfig(seed=seed))
    rng = np.random.default_rng([seed, 5])
    rows = []
    n_harmless = round(per_round * harmless_share)
    for k in range(1, rounds + 1):
        pairs = [(*p, "helpful") for p in sample_pairs(per_round - n_harmless, 50_000 + 10 * seed + k)]
        pairs += [(*p, "harmless") for p in sample_pairs(n_harmless, 60_000 + 10 * seed + k, ("risky",))]
        overlapped = set(rng.choice(len(pairs), round(overlap_share * len(pairs)), replace=False).tolist())
        turns = np.concatenate([rng.permutation(len(panel)) for _ in range(len(pairs) // len(panel) + 60)])
        at = 0
        for i, (prompt, a, b, question) in enumerate(pairs):
            who: list[int] = []
            while len(who) < (overlap_k if i in overlapped else 1):
                if turns[at] not in who:
                    who.append(int(turns[at]))
                at += 1
            for j in who:
                answer = panel.labellers[j].compare(prompt, a, b, rng, question)
                chosen, rejected = (b, a) if answer.choice == 1 else (a, b)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "tie": answer.choice is None,
                             "objective": question, "labeller_id": panel.labellers[j].spec.name, "round": k})  # fmt: skip
    return panel, rows


def round_models(backbone: str, rows: list[dict], seed: int):
    """Per round k, the reward model trained on the labels of rounds <= k: frozen backbone, a linear
    helpful and a linear harmless head (3 bootstrap members each, averaged), as `rlhf bench active
    --set active.train=heads` trains. Returns score(k) -> (chosen (N, 2), rejected (N, 2)) of every row."""
    from rlhf.active import ActiveConfig, Scorer, fit_linear_heads
    from rlhf.data import join_prompt_response

    index: dict[str, int] = {}
    chosen = np.array(
        [index.setdefault(join_prompt_response(r["prompt"], r["chosen"]), len(index)) for r in rows]
    )
    rejected = np.array(
        [index.setdefault(join_prompt_response(r["prompt"], r["rejected"]), len(index)) for r in rows]
    )
    feats = Scorer(ActiveConfig(train="heads"), backbone).features(list(index))  # (T, D)
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    labelled_in = np.array([r["round"] for r in rows])
    tie = np.array([bool(r["tie"]) for r in rows])
    heads = {}
    for k in sorted(set(labelled_in.tolist())):
        columns = []
        for objective in ("helpful", "harmless"):
            m = (labelled_in <= k) & np.array([r["objective"] == objective for r in rows])
            w = fit_linear_heads(z, chosen[m], rejected[m], tie[m], np.ones(m.sum()), 3, seed, 1e-2)  # (3, D)
            columns.append(w.mean(0))
        heads[k] = np.stack(columns, 1)  # (D, 2)
    return lambda k: (z[chosen] @ heads[k], z[rejected] @ heads[k])


def loop_scores(score, labelled_in: np.ndarray, last: int):
    """The loop's choice (`rlhf.loop.labeller_quality`): round j's labels scored by round j-1's model,
    round 1's by the last round's."""
    chosen, rejected = score(last)
    for j in range(2, last + 1):
        c, r = score(j - 1)
        chosen[labelled_in == j], rejected[labelled_in == j] = c[labelled_in == j], r[labelled_in == j]
    return chosen, rejected


def test_at_the_demos_label_counts_spammer_and_length_judge_rank_lowest_and_are_flagged(small_world):
    """The issue's acceptance: at the demo's 2,160 labels (~196 a labeller, 3 rounds of 600 comparisons,
    10% to 3 labellers) the reward-model fit ranks the spammer and the length judge lowest and flags
    them, and the careful labellers' rationalities rank-correlate with their hidden true ones. The hidden
    rationalities are read only here, to check; the fit never sees them.

    Measured (small test world, this panel seed 0): spammer 0.13, length judge 0.41, careful
    0.58-1.19 (Spearman 0.29); scoring all labels by the last model instead lifts the spammer to 0.46
    (Spearman 0.17): the circularity the loop's choice avoids. Seeds 1-5: see docs/active.md."""
    _, world_dir = small_world
    panel, rows = panel_rounds(seed=0)
    rounds, per_round, _, overlap, k = demo_label_counts()
    assert len(rows) == rounds * round(per_round * (1 + overlap * (k - 1))) == 2160  # 720 a round
    labels = [r for r in rows if not r["tie"]]
    score = round_models(str(world_dir), labels, seed=0)
    chosen, rejected = loop_scores(score, np.array([r["round"] for r in labels]), rounds)
    report = quality_report(labels, chosen, rejected, ["helpful", "harmless"])
    kinds = {lab.spec.name: lab.spec.kind for lab in panel.labellers}
    true = {lab.spec.name: lab.spec.rationality for lab in panel.labellers}
    fitted = {row["labeller_id"]: row for row in report["labellers"]}
    ranked = sorted(fitted, key=lambda name: fitted[name]["rationality"])
    assert {kinds[name] for name in ranked[:2]} == {"spammer", "length"}
    assert {kinds[name] for name in fitted if fitted[name]["flagged"]} >= {"spammer", "length"}
    careful = [name for name in fitted if kinds[name] == "gold"]
    rho = spearmanr([true[n] for n in careful], [fitted[n]["rationality"] for n in careful]).correlation
    assert rho > 0  # 0.29 measured
    assert all(fitted[n]["n_labels"] > 130 for n in fitted)  # ~196 a labeller less ties
    # flagged labels weigh the floor; the others max(beta, 0) normalised to mean 1 over the labels
    assert all(fitted[n]["weight"] == pytest.approx(0.02) for n in fitted if fitted[n]["flagged"])


def test_quality_report_by_hand():
    # two labellers on one helpful pair each way round; the report keeps the head and column names,
    # turns the shown order back into left / right only when every row has chosen_position
    rows = [
        {"prompt": "p", "chosen": "a b", "rejected": "c", "labeller_id": "x", "objective": "harmless"},
        {"prompt": "p", "chosen": "c", "rejected": "a b", "labeller_id": "y"},
    ]
    scores = {"a b": [1.0, -1.0], "c": [0.0, 0.0]}
    chosen = np.array([scores[r["chosen"]] for r in rows])
    rejected = np.array([scores[r["rejected"]] for r in rows])
    report = quality_report(rows, chosen, rejected, ["helpful", "harmless"])
    assert (
        report["columns"]
        == column_names(["helpful", "harmless"])
        == ["asked objective", "other objective", "length"]
    )
    assert not report["position_bias_fitted"] and report["n_labels"] == 2
    assert [row["labeller_id"] for row in report["labellers"]] == ["x", "y"]
    assert all(sum(row["judges_by"].values()) == pytest.approx(1.0) for row in report["labellers"])
    # x answered "which is less harmful?" and chose the harmless-head loser (-1 vs 0): a negative
    # target weight; y chose the helpful-head loser (0 vs 1): negative too, by symmetry the same
    x, y = report["labellers"]
    assert x["rationality"] < 1.0 and y["rationality"] < 1.0
    with pytest.raises(ValueError, match="2 rows need"):
        quality_report(rows, chosen[:1], rejected[:1], ["helpful", "harmless"])
    assert quality_report([], np.zeros((0, 2)), np.zeros((0, 2)), ["helpful", "harmless"])["labellers"] == []


@pytest.fixture(scope="module")
def two_head_reward_model(tiny_lm_dir, tmp_path_factory):
    """An untrained helpful + harmless reward model on the tiny LM: the CLI's plumbing, not its figures."""
    from rlhf.reward_model import init_reward_model, save_reward_model

    model, tokenizer = init_reward_model(tiny_lm_dir, ["helpful", "harmless"], 2, seed=0)
    return save_reward_model(tmp_path_factory.mktemp("rm") / "rm", model, tokenizer)


def test_cli_reliability_with_a_reward_model(two_head_reward_model, tmp_path, capsys):
    from rlhf.cli import main

    labels = tmp_path / "noisy.jsonl"
    assert main(["feedback", "panel-labels", "--out", str(labels), "--pairs", "40"]) == 0
    report = tmp_path / "report.json"
    args = ["feedback", "reliability", "--data", str(labels), "--report", str(report)]
    assert main([*args, "--reward-model", str(two_head_reward_model)]) == 0
    out, err = capsys.readouterr()
    assert f"scored by {two_head_reward_model} (heads helpful, harmless)" in out and "judges by" in out
    assert "position bias fitted: True" in out  # panel-labels rows carry chosen_position
    assert "answered mostly comparisons no other" not in err  # the free-utility warning is not this fit's
    saved = json.loads(report.read_text())["reliability"]
    assert saved["model"].startswith("reward-model utilities") and len(saved["labellers"]) == 10
    assert {"rationality_sd", "judges_by", "weight"} <= set(saved["labellers"][0])


def test_cli_reliability_bad_reward_model_is_one_line(tmp_path, capsys):
    from rlhf.cli import main

    labels = tmp_path / "noisy.jsonl"
    assert main(["feedback", "panel-labels", "--out", str(labels), "--pairs", "5"]) == 0
    capsys.readouterr()
    args = ["feedback", "reliability", "--data", str(labels), "--reward-model", str(tmp_path / "nope")]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--reward-model" in err and "not a reward-model directory" in err
