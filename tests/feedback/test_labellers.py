"""Labeller reports on preference rows: reliability weights, flags in the store, disagreement with gold."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.feedback.labellers import (
    disagreement_report,
    flag_in_store,
    noisy_panel_labels,
    reliability_report,
    weighted_rows,
)


def test_reliability_report_on_a_noisy_panel_weights_spammers_down():
    _, rows = noisy_panel_labels(seed=0, n_pairs=400)
    report = reliability_report(rows)
    assert report["position_bias_fitted"] and report["n_labels"] == sum(not r["tie"] for r in rows)
    kinds = {r["labeller_id"]: r["kind"] for r in rows}
    by_kind = {}
    for row in report["labellers"]:
        by_kind.setdefault(kinds[row["labeller_id"]], []).append(row)
    assert max(r["weight"] for r in by_kind["spammer"]) < min(r["weight"] for r in by_kind["gold"])
    assert not any(r["flagged"] for r in by_kind["gold"])
    out = weighted_rows(rows, report)
    # weights have mean 1 over the (non-tie) labels they were fitted on
    strict = [r["weight"] for r in out if not r["tie"]]
    assert sum(strict) / len(strict) == pytest.approx(1.0, abs=0.01)
    # without positions the bias is not fitted but the spammers still rank lowest
    plain = [{k: v for k, v in r.items() if k != "chosen_position"} for r in rows]
    report = reliability_report(plain)
    assert not report["position_bias_fitted"]
    lowest = sorted(report["labellers"], key=lambda r: r["rationality"])[:3]
    assert {kinds[r["labeller_id"]] for r in lowest} == {"spammer"}


def test_disagreement_report_by_hand():
    utility = {"good": 1.0, "bad": 0.0, "meh": 0.5}
    rows = [
        # pair (good, bad): majority 2-1 for bad -> disagrees with gold
        {"prompt": "p", "chosen": "bad", "rejected": "good", "labeller_id": "x"},
        {"prompt": "p", "chosen": "bad", "rejected": "good", "labeller_id": "y"},
        {"prompt": "p", "chosen": "good", "rejected": "bad", "labeller_id": "z"},
        # pair (meh, bad): majority for meh -> agrees; a tie vote does not count
        {"prompt": "p", "chosen": "meh", "rejected": "bad", "labeller_id": "x"},
        {"prompt": "p", "chosen": "meh", "rejected": "bad", "labeller_id": "y", "tie": True},
    ]
    report = disagreement_report(rows, gold_fn=lambda p, r: utility[r])
    assert report["pairs"] == 2 and report["majority_decided"] == 2
    assert report["majority_disagrees_with_gold"] == 1 and report["disagreement_rate"] == 0.5
    example = report["examples"][0]
    assert example["majority_preferred"] == "bad" and example["gold_preferred"] == "good"
    assert example["gold_utility_gap"] == 1.0
    # x: right on (meh, bad), wrong on (good, bad) -> 1/2; y: wrong (its tie skipped) -> 0; z: right -> 1
    assert report["labellers"] == {"x": 0.5, "y": 0.0, "z": 1.0}


def test_flag_in_store(make_store):
    store = make_store()
    a, _ = store.add_labeller("ann")
    b, _ = store.add_labeller("bob")
    assert flag_in_store(store, ["bob", "nobody"]) == 1
    assert store.get_labeller(b.id).flagged and not store.get_labeller(a.id).flagged


@pytest.mark.slow
def test_reliability_experiment_tiny(small_world):
    from rlhf.feedback.labellers import reliability_experiment

    world_cfg, _ = small_world
    result = reliability_experiment(seeds=1, n_pairs=60, test_size=80, world=world_cfg, log=lambda _: None)
    run = result["runs"][0]
    assert 0.0 <= run["unweighted"] <= 1.0 and 0.0 <= run["weighted"] <= 1.0
    assert len(run["labellers"]) == 10 and result["config"]["labels_per_pair"] == 3


def test_cli_reliability_writes_weights_and_report(tmp_path, capsys):
    import json

    from rlhf.cli import main
    from rlhf.io import read_jsonl

    labels = tmp_path / "noisy.jsonl"
    assert main(["feedback", "panel-labels", "--out", str(labels), "--pairs", "150"]) == 0
    out, report = tmp_path / "weighted.jsonl", tmp_path / "report.json"
    code = main(
        [
            "feedback",
            "reliability",
            "--data",
            str(labels),
            "--out",
            str(out),
            "--report",
            str(report),
            "--gold",
        ]
    )
    assert code == 0
    assert "majority disagrees with gold" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert len(rows) == 450 and all(r["weight"] > 0 for r in rows)
    saved = json.loads(report.read_text())
    assert {"reliability", "disagreement"} <= set(saved) and len(saved["reliability"]["labellers"]) == 10
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert main(["feedback", "reliability", "--data", str(empty)]) != 0  # no labeller ids: a user error


def test_cli_reliability_gold_when_the_labellers_agree(tmp_path, capsys):
    """Two labellers who agree on the one comparison they share: alpha is undefined (1 - 0/0). The
    command printed it through a ZeroDivisionError; now it says 'undefined' and why, and the JSON
    report holds null (strict JSON has no NaN)."""
    import json

    from rlhf.cli import main
    from rlhf.io import write_jsonl

    prompt = "User: how do I boil an egg?\nAssistant:"
    good, bad = " Boil it for eight minutes, then cool it in cold water.", " No."
    data, report = tmp_path / "pairs.jsonl", tmp_path / "report.json"
    write_jsonl(data, [{"prompt": prompt, "chosen": good, "rejected": bad, "labeller_id": name}
                       for name in ("alice", "bob")])  # fmt: skip
    assert main(["feedback", "reliability", "--data", str(data), "--gold", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "Krippendorff's alpha (nominal) undefined (every item answered by 2 or more" in out
    strict = json.loads(report.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert strict["disagreement"]["krippendorff_alpha_nominal"] is None
    assert strict["disagreement"]["pairs"] == 1


def test_cli_reliability_on_rankings_and_ratings_says_to_export_pairs(tmp_path, capsys):
    from rlhf.cli import main
    from rlhf.io import write_jsonl

    data = tmp_path / "rankings.jsonl"
    write_jsonl(data, [{"prompt": "q", "responses": ["a", "b", "c"], "ranking": [2, 0, 1], "labeller_id": "ann"},
                       {"prompt": "q", "response": "a", "rating": 4, "labeller_id": "bob"}])  # fmt: skip
    assert main(["feedback", "reliability", "--data", str(data)]) != 0
    err = capsys.readouterr().err
    assert (
        "holds rankings and ratings: reliability is fitted on the labels of comparison and binary tasks, "
        in err
    )
    assert "`rlhf label export --kind pairs`" in err and err.count("\n") == 1


def test_reliability_counts_shared_labels_and_warns_when_few_are_shared(tmp_path, capsys):
    """A and B agree on all 20 comparisons they share; A also answered 30 nobody else did. The fit gave A
    a higher weight (3.56 against 2.64) without a word; now each labeller's shared labels are counted and
    the command warns that the weights rest on little overlap."""
    from rlhf.cli import main
    from rlhf.feedback.labellers import reliability_report
    from rlhf.io import write_jsonl

    shared = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)]
    rows = [{**r, "labeller_id": who} for r in shared for who in ("A", "B")]
    rows += [
        {"prompt": f"own{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "labeller_id": "A"}
        for i in range(30)
    ]
    report = reliability_report(rows)
    counts = {r["labeller_id"]: (r["n_labels"], r["shared_labels"]) for r in report["labellers"]}
    assert counts == {"A": (50, 20), "B": (20, 20)} and report["shared_labels"] == 40
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert main(["feedback", "reliability", "--data", str(tmp_path / "rows.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "warning: A answered mostly comparisons no other labeller answered" in err
    # the same comparison with the sides swapped is the same comparison
    swapped = [{"prompt": "q", "chosen": "x", "rejected": "y", "labeller_id": "A"},
               {"prompt": "q", "chosen": "y", "rejected": "x", "labeller_id": "B"}]  # fmt: skip
    assert reliability_report(swapped)["shared_labels"] == 2


def test_reliability_report_fits_binary_rows():
    """Unpaired rows (`rlhf label export --kind binary`): 60 responses each judged by 5 labellers, four
    careful (P(good) = sigmoid(2 (u - 0))) and one at random: the random one is flagged and weighted
    down to the floor; the rows count as binary labels and no position bias is fitted."""
    from rlhf.feedback.labellers import reliability_report

    rng = np.random.default_rng(1)
    u = rng.normal(size=60)
    rows = []
    for who, beta in (("a", 2.0), ("b", 2.0), ("c", 2.0), ("d", 2.0), ("spam", 0.0)):
        good = rng.random(60) < 1 / (1 + np.exp(-beta * u))
        rows += [{"prompt": f"p{i}", "completion": f"r{i}", "label": bool(g), "labeller_id": who}
                 for i, g in enumerate(good)]  # fmt: skip
    rows.append(
        {"prompt": "p0", "completion": "r0", "label": 1, "labeller_id": "a"}
    )  # not a boolean: left out
    report = reliability_report(rows)
    assert report["n_labels"] == report["n_binary_labels"] == 300 and report["n_items"] == 60
    assert report["position_bias_fitted"] is False and report["shared_labels"] == 300
    by = {r["labeller_id"]: r for r in report["labellers"]}
    assert [n for n, r in by.items() if r["flagged"]] == ["spam"]
    assert by["spam"]["weight"] == pytest.approx(0.02) and min(by[n]["weight"] for n in "abcd") > 1.0
