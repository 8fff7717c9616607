"""Simulated labellers: agreement statistics by hand, limiting cases, calibration of the default panel."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from rlhf.errors import ConfigError
from rlhf.world import corpus as c
from rlhf.world import gold as g
from rlhf.world import panel as P

PAIRS = c.sample_pairs(600, seed=0)
GOLD = P.gold_choices(PAIRS)


def ideal(**kw) -> P.Labeller:
    spec = dict(rationality=1e6, mistake_rate=0.0, position_bias=0.0, length_bias=0.0, tie_threshold=0.0)
    return P.Labeller(P.LabellerSpec(**(spec | kw)))


def test_agreement_statistics_by_hand():
    T = P.TIE
    choices = np.array([[0, 1, 0, T], [0, 1, 1, 0], [0, 0, 1, 0]])  # (L=3, P=4)
    gold = np.array([0, 1, 1, T])
    # with gold: labeller 0 answers pairs 0-2 -> right on 0, 1, wrong on 2: 2/3 (pair 3 is a gold tie);
    # labeller 1: 3/3; labeller 2: pairs 0, 2 right, 1 wrong: 2/3
    per, _ = P.agreement_with_gold(choices, gold)
    np.testing.assert_allclose(per, [2 / 3, 1.0, 2 / 3])
    # leave-one-out majority: labeller 0 -- pair 0 others (0,0) -> 0 agree; pair 1 others (1,0) split,
    # skipped; pair 2 others (1,1) -> 1, disagree; pair 3 its own tie, skipped: 1/2.
    # labeller 1 -- pair 0 agree; pair 1 others (1,0) split; pair 2 others (0,1) split; pair 3 others
    # (tie, 0) -> 0 agree: 2/2. labeller 2 -- pair 0 agree; pair 1 others (1,1) -> 1, disagree;
    # pair 2 split; pair 3 others (tie, 0) -> 0 agree: 2/3
    per, stats = P.majority_agreement(choices)
    np.testing.assert_allclose(per, [1 / 2, 1.0, 2 / 3])
    assert stats["agreement/majority"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    # pairwise: (0,1) both answer pairs 0-2, same on 0, 1: 2/3; (0,2) pairs 0-2, same on 0: 1/3;
    # (1,2) pairs 0-3, same on 0, 2, 3: 3/4
    m, stats = P.pairwise_agreement(choices)
    assert (
        m[0, 1] == pytest.approx(2 / 3)
        and m[0, 2] == pytest.approx(1 / 3)
        and m[1, 2] == pytest.approx(3 / 4)
    )
    assert stats["agreement/pairwise"] == pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3)


def test_labels_are_reproducible():
    panel = P.make_panel(P.PanelConfig(seed=3))
    a, sa = P.label_pairs(panel, PAIRS[:100], seed=5)
    b, sb = P.label_pairs(panel, PAIRS[:100], seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    other, _ = P.label_pairs(panel, PAIRS[:100], seed=6)
    assert (a != other).any()
    assert [s.spec for s in P.make_panel(P.PanelConfig(seed=3)).labellers] == [
        s.spec for s in panel.labellers
    ]


def test_perfectly_rational_labeller_agrees_with_gold():
    choices, _ = P.label_pairs(P.Panel([ideal()]), PAIRS, seed=0)
    per, stats = P.agreement_with_gold(choices, GOLD)
    assert per[0] == 1.0 and stats["agreement/gold_n"] > 400


def test_spammer_agrees_half_the_time():
    # about 480 non-tied pairs: the standard error of a coin's agreement is 0.023, tolerance 0.07 is 3 SE
    spammer = P.Labeller(P.LabellerSpec(spammer=True))
    choices, seconds = P.label_pairs(P.Panel([spammer]), PAIRS, seed=0)
    per, _ = P.agreement_with_gold(choices, GOLD)
    assert per[0] == pytest.approx(0.5, abs=0.07)
    assert (choices != P.TIE).all()
    careful, careful_seconds = P.label_pairs(P.Panel([ideal()]), PAIRS, seed=0)
    assert seconds.mean() < careful_seconds.mean()  # spammers click without reading


def test_agreement_with_gold_rises_with_rationality():
    labellers = [ideal(rationality=b) for b in (0.3, 1.0, 3.0)]
    choices, _ = P.label_pairs(P.Panel(labellers), PAIRS, seed=0)
    per, _ = P.agreement_with_gold(choices, GOLD)
    assert per[0] < per[1] < per[2]
    assert per[0] > 0.5


def test_default_panel_agreement_is_in_the_calibrated_band():
    report = P.default_report(n_pairs=600, seed=0)
    assert 0.65 <= report["majority_agreement"] <= 0.75
    assert report["n_labellers"] == 11 and report["n_pairs"] == 600
    kinds = [row["kind"] for row in report["labellers"]]
    assert kinds.count("spammer") == 1 and kinds.count("length") == 1 and kinds.count("refusal") == 1
    spammer = next(row for row in report["labellers"] if row["kind"] == "spammer")
    assert spammer["majority_agreement"] == pytest.approx(0.5, abs=0.07)
    assert spammer["majority_agreement"] < min(
        r["majority_agreement"] for r in report["labellers"] if r["kind"] == "gold"
    )


def test_length_bias_prefers_the_longer_of_equal_utility_answers():
    # calibration by hand: lengths 30 and 20 words -> log(31/21) = 0.389; sigmoid(1.4 * 0.389) = 0.633
    assert P._sigmoid(1.4 * math.log(31 / 21)) == pytest.approx(0.633, abs=1e-3)
    equal = [
        (p, a, b)
        for p, a, b in c.sample_pairs(3000, 1)
        if abs(g.utility(p, a) - g.utility(p, b)) < 1e-9 and len(a.split()) != len(b.split())
    ]
    assert len(equal) > 300
    default_panel = P.make_panel(P.PanelConfig())
    length_lover = next(lab for lab in default_panel.labellers if lab.spec.kind == "length")
    unbiased = ideal(rationality=1.2, length_bias=0.0, tie_threshold=0.05)
    typical = ideal(rationality=1.2, length_bias=1.4, tie_threshold=0.05)
    choices, _ = P.label_pairs(P.Panel([length_lover, typical, unbiased]), equal, seed=0)
    longer_is_left = np.array([len(a.split()) > len(b.split()) for _, a, b in equal])
    picked_longer = (choices == np.where(longer_is_left, 0, 1)).mean(axis=1)
    assert picked_longer[0] > 0.6  # judges by length alone (mistakes and small length ratios dilute it)
    assert picked_longer[1] > 0.53  # typical labeller: a mild but clear preference
    assert (choices[2] == P.TIE).all()  # without length bias equal utility is a tie


def test_position_bias_favours_the_left_answer():
    same = [(p, a, a) for p, a, _ in PAIRS]  # identical answers: only the position differs
    choices, _ = P.label_pairs(
        P.Panel([ideal(rationality=1.0, position_bias=1.0, tie_threshold=-1.0)]), same, 0
    )
    # sigmoid(1.0) = 0.731 of left choices expected; 600 draws, SE 0.018
    assert (choices == 0).mean() == pytest.approx(0.731, abs=0.06)


def test_comparison_fields():
    rng = np.random.default_rng(0)
    prompt, a, b = PAIRS[0]
    tie = ideal(tie_threshold=10.0).compare(prompt, a, b, rng)
    assert tie.choice is None and tie.strength == 0 and tie.seconds > 0
    sure = ideal().compare(
        c.format_prompt("What can you tell me about tea?"),
        "Tea has less caffeine than coffee.",
        "Stop bothering me. Look it up yourself.",
        rng,
    )
    assert sure.choice == 0 and sure.strength == 4
    # reading time grows with length: mean over 200 draws, words 2 vs ~200
    lab = ideal()
    short = np.mean([lab.compare("hi", "a b", "c d", rng).seconds for _ in range(200)])
    long = np.mean([lab.compare("hi", "a " * 100, "b " * 100, rng).seconds for _ in range(200)])
    assert long > short + 30  # 0.25 s/word * ~200 extra words = 50 s


def test_rankings_are_permutations_and_follow_utility():
    rng = np.random.default_rng(0)
    lab = P.make_panel(P.PanelConfig()).labellers[0]
    d = c.generate_corpus(50, 4)
    for x in d:
        responses = [c.write_response(x.request, k, rng) for k in c.RESPONSE_KINDS[x.request.kind]]
        r = lab.rank(x.prompt, responses, rng)
        assert sorted(r.order) == list(range(len(responses))) and r.seconds > 0
    # an ideal labeller ranks by utility: helpful, partly, off_topic/rude
    req = c.Request("question", "tea", "What can you tell me about tea?")
    p = c.format_prompt(req.text)
    texts = [
        " ".join(c.TOPIC_BY_NAME["tea"].facts),
        "Tea has less caffeine than coffee.",
        "Stop bothering me.",
    ]
    assert ideal().rank(p, texts[::-1], rng).order == (2, 1, 0)


def test_ratings_are_likert_and_track_utility():
    rng = np.random.default_rng(0)
    lab = P.make_panel(P.PanelConfig()).labellers[0]
    d = c.generate_corpus(1000, 6)
    scores = np.array([lab.rate(x.prompt, x.response, rng).score for x in d])
    utilities = np.array([g.utility(x.prompt, x.response) for x in d])
    assert scores.min() >= 1 and scores.max() <= 7
    assert spearmanr(scores, utilities).statistic > 0.4
    # without noise (huge beta) the cuts are exact: utility 1.0 > 0.9 -> 7; -1.25 < -0.9 -> 1
    assert (
        ideal()
        .rate(
            p := c.format_prompt("What can you tell me about tea?"),
            " ".join(c.TOPIC_BY_NAME["tea"].facts),
            rng,
        )
        .score
        == 7
    )
    assert ideal().rate(p, "Stop bothering me. Look it up yourself.", rng).score == 1


def test_config_validation_and_explicit_labellers():
    with pytest.raises(ConfigError):
        P.make_panel(P.PanelConfig(n_labellers=2, n_spammers=3))
    with pytest.raises(ConfigError):
        P.make_panel(P.PanelConfig(guideline="nonsense"))
    panel = P.make_panel(P.PanelConfig(labellers=[P.LabellerSpec(name="ann"), P.LabellerSpec(name="bob")]))
    assert panel.names == ["ann", "bob"]
