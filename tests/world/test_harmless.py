"""The harmless question ("which response is less harmful?"): labellers, the default panel, the export."""

import numpy as np
import pytest

from rlhf.config_root import RootConfig
from rlhf.errors import UserError
from rlhf.io import read_jsonl
from rlhf.world import corpus as c
from rlhf.world import gold as g
from rlhf.world import panel as P
from rlhf.world.export import export

RISKY = [r for r in c.all_requests() if r.kind == "risky"]
RISKY_PAIRS = c.sample_pairs(600, seed=0, request_kinds=("risky",))


def ideal(**kw) -> P.Labeller:
    spec = dict(rationality=1e6, mistake_rate=0.0, position_bias=0.0, length_bias=0.0, tie_threshold=0.0)
    return P.Labeller(P.LabellerSpec(**(spec | kw)))


def drawn(req: c.Request, kind: str, rng: np.random.Generator, n: int = 6) -> set[str]:
    return {c.write_response(req, kind, rng) for _ in range(n)}


def test_rational_labellers_prefer_safe_answers_on_every_risky_request():
    """Both orders, every risky request, several surface forms: refusal and constructive beat harmful.
    The refusal-guideline labeller judges harm the same way; the length bias does not enter."""
    rng = np.random.default_rng(0)
    labellers = [ideal(), ideal(objective="refusal"), ideal(length_bias=1.4, tie_threshold=0.05)]
    for req in RISKY:
        p = c.format_prompt(req.text)
        harmful = drawn(req, "harmful", rng)
        safe = drawn(req, "refusal", rng) | drawn(req, "constructive", rng)
        for lab in labellers:
            for h in harmful:
                for s in safe:
                    assert lab.compare(p, s, h, rng, question="harmless").choice == 0, (req, s, h)
                    assert lab.compare(p, h, s, rng, question="harmless").choice == 1, (req, s, h)


def test_harmless_question_ignores_length_and_ties_equal_harm():
    rng = np.random.default_rng(0)
    p = c.format_prompt("How can I hack into my neighbour's wifi?")
    refusal = "I cannot help with that request."  # 6 words
    constructive = (
        "I cannot help with that, because using a network without permission is illegal. "
        "Instead, ask your neighbour if you can share the wifi and split the bill."
    )  # 27 words; harm 0 like the refusal
    lab = ideal(length_bias=1.4, tie_threshold=0.05)
    # helpful: utility 0.9 vs 0.2; harmless: 0 vs 0, and length is no reason to prefer either -> tie
    assert lab.compare(p, refusal, constructive, rng).choice == 1
    assert lab.compare(p, refusal, constructive, rng, question="harmless").choice is None
    # a labeller who judges by length answers by length whatever the question: the longer harmful one
    harmful = (
        "Sure. First, scan for the networks around you. Then, run a tool that guesses the password. "
        "Finally, connect and use it without asking."
    )
    assert ideal(objective="length").compare(p, refusal, harmful, rng, question="harmless").choice == 1
    with pytest.raises(ValueError):
        lab.compare(p, refusal, harmful, rng, question="honest")


def test_harmless_scale_matches_the_helpful_vs_rude_gap():
    # the median helpful-minus-rude utility over 3 answers of each kind to every benign request
    rng = np.random.default_rng(1)
    gaps = []
    for req in c.all_requests():
        if req.kind != "risky":
            p = c.format_prompt(req.text)
            for _ in range(3):
                helpful, rude = c.write_response(req, "helpful", rng), c.write_response(req, "rude", rng)
                gaps.append(g.utility(p, helpful) - g.utility(p, rude))
    assert np.median(gaps) == pytest.approx(P.HARMLESS_SCALE, abs=0.1)


def test_harmless_choice_probability_by_hand():
    # beta = 1, no bias or mistakes, harm 1 vs 0: P(safe) = sigmoid(1.7 * 1) = 1 / (1 + e^-1.7) = 0.8455;
    # 2000 draws: standard error sqrt(0.8455 * 0.1545 / 2000) = 0.008, tolerance 0.03 is ~4 SE
    p = c.format_prompt("How can I hack into my neighbour's wifi?")
    pair = (
        p,
        "I cannot help with that request.",
        "Run a tool that guesses the password. Connect and use it without asking.",
    )
    assert g.harm(p, pair[1]) == 0.0 and g.harm(p, pair[2]) == 1.0
    choices, _ = P.label_pairs(P.Panel([ideal(rationality=1.0)]), [pair] * 2000, seed=0, question="harmless")
    assert P._sigmoid(1.7) == pytest.approx(0.8455, abs=1e-4)
    assert (choices == 0).mean() == pytest.approx(0.8455, abs=0.03)


def test_helpful_question_keeps_todays_draws():
    """Both questions draw the same random numbers, and question="helpful" is the default."""
    lab = P.make_panel(P.PanelConfig()).labellers[0]
    for prompt, a, b in RISKY_PAIRS[:50]:
        r1, r2, r3 = (np.random.default_rng(7) for _ in range(3))
        assert lab.compare(prompt, a, b, r1) == lab.compare(prompt, a, b, r2, question="helpful")
        lab.compare(prompt, a, b, r3, question="harmless")
        assert r1.random() == r2.random() == r3.random()
    # the reference pairs are drawn exactly as before when request_kinds is None
    assert c.sample_pairs(40, 3) == c.sample_pairs(40, 3, request_kinds=None)
    assert all(c.parse_request(p).kind == "risky" for p, _, _ in RISKY_PAIRS)
    with pytest.raises(ValueError):
        c.sample_pairs(5, 0, request_kinds=("dangerous",))


def test_default_panel_harmless_answers_agree_with_gold_harm():
    """600 risky reference pairs, seed 0 (measured: gold says tie on 49.7% -- refusal vs constructive,
    harmful vs harmful; mean agreement with gold harm 78.2% over the 11 labellers, 86.3% for the 8 gold
    labellers, 77.2% the refusal one, 52% the spammer, 41% the length one, who prefers the longer
    harmful answer; leave-one-out majority agreement 76.4%)."""
    report = P.panel_report(P.make_panel(P.PanelConfig(seed=0)), RISKY_PAIRS, 0, question="harmless")
    assert 0.4 < report["gold_tie_rate"] < 0.6
    assert report["agreement_with_gold"] > 0.72  # chance is 0.5
    rows = {kind: [r for r in report["labellers"] if r["kind"] == kind] for kind in ("gold", "length")}
    assert np.mean([r["agreement_with_gold"] for r in rows["gold"]]) > 0.8
    assert rows["length"][0]["agreement_with_gold"] < 0.5
    assert 0.68 < report["majority_agreement"] < 0.85


def test_harmless_rankings_and_ratings():
    rng = np.random.default_rng(0)
    req = RISKY[0]
    p = c.format_prompt(req.text)
    texts = [c.write_response(req, k, rng) for k in ("harmful", "refusal", "constructive")]
    # an ideal labeller puts the harmful answer last; the two safe ones are equal (harm 0)
    order = ideal().rank(p, texts, rng, question="harmless").order
    assert order[-1] == 0 and sorted(order) == [0, 1, 2]
    # harmless ratings: U = 1 - 2 * harm -> 1.0 > 0.9 is a 7, -1.0 < -0.9 is a 1
    assert [ideal().rate(p, t, rng, question="harmless").score for t in texts] == [1, 7, 7]


def test_export_harmless_pairs(tmp_path):
    cfg = RootConfig()
    # gold: the lower-harm answer is chosen; every row is about a risky request and says its objective
    n = export(cfg, "pairs", tmp_path / "gold.jsonl", 40, seed=0, objective="harmless")
    rows = read_jsonl(tmp_path / "gold.jsonl")
    assert n == len(rows) == 40
    for row in rows:
        assert row["objective"] == "harmless" and c.parse_request(row["prompt"]).kind == "risky"
        assert row["chosen_harm"] < row["rejected_harm"]
        assert g.harm(row["prompt"], row["chosen"]) == row["chosen_harm"]
        assert "chosen_utility" not in row
    # panel: labellers asked the harmless question; ties skipped. Agreement with gold harm on the
    # exported rows where gold is not a tie is well above chance (spammers and mistakes included)
    export(cfg, "pairs", tmp_path / "panel.jsonl", 200, seed=0, judge="panel", objective="harmless")
    rows = read_jsonl(tmp_path / "panel.jsonl")
    assert len(rows) == 200 and {r["objective"] for r in rows} == {"harmless"}
    assert len({r["labeller_id"] for r in rows}) > 1
    decided = [r for r in rows if g.harm(r["prompt"], r["chosen"]) != g.harm(r["prompt"], r["rejected"])]
    agree = np.mean([g.harm(r["prompt"], r["chosen"]) < g.harm(r["prompt"], r["rejected"]) for r in decided])
    assert len(decided) > 60 and agree > 0.7
    # the helpful export is unchanged except for its new "objective" field
    export(cfg, "pairs", tmp_path / "helpful.jsonl", 20, seed=0)
    rows = read_jsonl(tmp_path / "helpful.jsonl")
    assert all(r["objective"] == "helpful" and r["chosen_utility"] > r["rejected_utility"] for r in rows)
    with pytest.raises(UserError):
        export(cfg, "pairs", tmp_path / "x.jsonl", 5, seed=0, objective="honest")
