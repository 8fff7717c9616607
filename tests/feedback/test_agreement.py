"""Agreement statistics against published worked examples (and the reference libraries)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.feedback.agreement import (
    LEVELS,
    MISSING,
    agreement_with_gold,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    majority_vs_gold,
    pairwise_cohen_kappa,
)
from rlhf.feedback.labellers import disagreement_report

# Wikipedia "Cohen's kappa": 50 grant proposals; A and B both yes on 20, A yes / B no on 5,
# A no / B yes on 10, both no on 15. p_o = 35/50 = 0.7; A says yes 25/50, B 30/50, so
# p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5 and kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
COHEN_A = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
COHEN_B = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)

# Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories; P_bar = 0.378, P_e = 0.213, kappa = 0.210.
FLEISS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: 4 observers, 12 units,
# values 1..5, blanks missing; published alpha: nominal 0.743, ordinal 0.815, interval 0.849.
M = MISSING
KRIPP = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, M, M, M],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, M, 3],
        [M, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, M],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, M],
    ]
)


def test_cohen_kappa_wikipedia_example():
    kappa, stats = cohen_kappa(COHEN_A, COHEN_B)
    assert kappa == pytest.approx(0.4)
    assert stats["kappa/observed"] == pytest.approx(0.7)
    assert stats["kappa/expected"] == pytest.approx(0.5)


def test_cohen_kappa_skips_missing_and_matches_pairwise():
    a = np.concatenate([COHEN_A, [MISSING, 1]])
    b = np.concatenate([COHEN_B, [0, MISSING]])
    assert cohen_kappa(a, b)[0] == pytest.approx(0.4)
    matrix, stats = pairwise_cohen_kappa(np.stack([COHEN_A, COHEN_B]))
    assert matrix[0, 1] == pytest.approx(0.4) and matrix[0, 0] == 1.0
    assert stats["kappa/mean"] == pytest.approx(0.4)


def test_cohen_kappa_matches_statsmodels_on_three_categories():
    statsmodels = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(0)
    a = rng.integers(-1, 2, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.integers(-1, 2, 200))
    table = np.array([[np.sum((a == i) & (b == j)) for j in (-1, 0, 1)] for i in (-1, 0, 1)])
    assert cohen_kappa(a, b)[0] == pytest.approx(statsmodels.cohens_kappa(table).kappa)


def test_fleiss_kappa_wikipedia_example():
    kappa, stats = fleiss_kappa(FLEISS)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    assert stats["fleiss/observed"] == pytest.approx(0.378, abs=5e-4)
    assert stats["fleiss/expected"] == pytest.approx(0.213, abs=5e-4)


def test_fleiss_kappa_from_labels_matches_statsmodels():
    statsmodels = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(1)
    truth = rng.integers(-1, 2, 60)
    labels = np.where(rng.random((5, 60)) < 0.7, truth, rng.integers(-1, 2, (5, 60)))  # (L, I)
    counts, cats = category_counts(labels)
    assert list(cats) == [-1, 0, 1]
    assert fleiss_kappa(counts)[0] == pytest.approx(statsmodels.fleiss_kappa(counts))
    # unequal raters per item (2, 2, 1): outside Fleiss' definition -> undefined, said why, not an error
    kappa, stats = fleiss_kappa(np.array([[1, 1], [2, 0], [0, 1]]))
    assert np.isnan(kappa) and "1 to 2 raters" in stats["fleiss/undefined"]


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_published_example(level, published):
    alpha, _ = krippendorff_alpha(KRIPP, level)
    assert alpha == pytest.approx(published, abs=5e-4)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_alpha_matches_package(level):
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 8, 40)
    labels = np.clip(truth + rng.integers(-1, 2, (6, 40)), 1, 7).astype(float)
    labels[rng.random(labels.shape) < 0.2] = MISSING
    expected = krippendorff.alpha(
        reliability_data=np.where(labels == MISSING, np.nan, labels), level_of_measurement=level
    )
    assert krippendorff_alpha(labels, level)[0] == pytest.approx(expected)


def test_nominal_alpha_treats_tie_codes_as_names():
    # A/B/tie codes -1/0/1: nominal alpha must not change when the codes are relabelled, interval would.
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 2, (4, 30))
    relabelled = np.select([labels == -1, labels == 0], [7, 3], 5)
    assert krippendorff_alpha(labels, "nominal")[0] == pytest.approx(
        krippendorff_alpha(relabelled, "nominal")[0]
    )
    assert krippendorff_alpha(labels, "interval")[0] != pytest.approx(
        krippendorff_alpha(relabelled, "interval")[0]
    )
    with pytest.raises(ValueError):
        krippendorff_alpha(labels, "ratio")


def test_agreement_with_gold_and_majority():
    labels = np.array([[0, 1, -1, 0], [0, 0, 1, MISSING], [1, 1, 1, 0]])
    gold = np.array([0, 1, 1, -1])
    per, stats = agreement_with_gold(labels, gold)
    # item 3 is a gold tie, so it never counts. labeller 0: items 0, 1 (item 2 is its tie) -> 2/2;
    # labeller 1: items 0 (0 = 0), 1 (0 != 1), 2 (1 = 1) -> 2/3; labeller 2: items 0 (1 != 0), 1, 2 -> 2/3
    assert per == pytest.approx([1.0, 2 / 3, 2 / 3])
    majority, stats = majority_vs_gold(labels, gold)
    # votes item 0: two 0s one 1 -> 0; item 1: two 1s -> 1; item 2: two 1s -> 1; item 3: two 0s -> 0
    assert list(majority) == [0, 1, 1, 0]
    assert stats["gold/majority_disagreement"] == 0.0 and stats["gold/majority_decided"] == 3


# ---------------------------------------------------------------- degenerate tables: NaN with a reason


@pytest.mark.parametrize("level", LEVELS)
def test_alpha_when_the_labellers_agree_on_their_one_shared_item(level):
    # the loop's case: alice and bob agree (0) on item 0; alice alone answered item 1 (1). The values
    # seen are {0, 1}, but only item 0 is pairable: coincidences o_00 = 2 * 1 / (2 - 1) = 2, n_0 = 2,
    # n_1 = 0, so D_e = (n_0 n_1 + n_1 n_0) / (n (n - 1)) = 0 and alpha = 1 - 0/0. Before: ZeroDivisionError.
    alpha, stats = krippendorff_alpha(np.array([[0, 1], [0, M]]), level)
    assert np.isnan(alpha) and stats["alpha/pairable"] == 2.0
    assert "expected disagreement is 0" in stats["alpha/undefined"]


def test_every_statistic_when_all_raters_give_one_category():
    # 2 raters x 3 items, every answer 1: p_o = 1 and chance agreement p_e = 1 -> kappa = 0/0;
    # Fleiss: P_i = (2^2 - 2) / (2 * 1) = 1, p_c = (1,), P_e = 1 -> 0/0; alpha: D_e = 0 -> 0/0.
    # (Before, both kappas returned 1.0 here: "perfect" agreement that chance alone explains.)
    same = np.ones((2, 3), dtype=int)
    kappa, stats = cohen_kappa(same[0], same[1])
    assert np.isnan(kappa) and (stats["kappa/observed"], stats["kappa/expected"]) == (1.0, 1.0)
    assert "chance agreement is 1" in stats["kappa/undefined"]
    matrix, stats = pairwise_cohen_kappa(same)
    assert np.isnan(matrix[0, 1]) and matrix[0, 0] == 1.0 and np.isnan(stats["kappa/mean"])
    kappa, stats = fleiss_kappa(category_counts(same)[0])
    assert np.isnan(kappa) and stats["fleiss/observed"] == 1.0 and stats["fleiss/expected"] == 1.0
    for level in LEVELS:
        alpha, stats = krippendorff_alpha(same, level)
        assert np.isnan(alpha) and stats["alpha/pairable"] == 6.0 and "(code 1)" in stats["alpha/undefined"]


def test_one_item_defined_when_the_raters_differ_undefined_when_they_agree():
    # one item, answers 0 and 1: o_01 = o_10 = 1 / (2 - 1) = 1, n_0 = n_1 = 1, n = 2;
    # D_o = (o_01 + o_10) / n = 1, D_e = (1 * 1 + 1 * 1) / (2 * 1) = 1 -> alpha = 1 - 1 = 0.
    assert krippendorff_alpha(np.array([[0], [1]]), "nominal")[0] == pytest.approx(0.0)
    # Cohen: p_o = 0, p_e = 1 * 0 + 0 * 1 = 0 -> kappa = 0. Fleiss (counts [1, 1], n = 2):
    # P_1 = (1 + 1 - 2) / 2 = 0, P_e = 0.5^2 + 0.5^2 = 0.5 -> kappa = (0 - 0.5) / 0.5 = -1.
    assert cohen_kappa(np.array([0]), np.array([1]))[0] == pytest.approx(0.0)
    assert fleiss_kappa(np.array([[1, 1]]))[0] == pytest.approx(-1.0)
    # the same item answered 0 by both: all three undefined
    assert np.isnan(krippendorff_alpha(np.array([[0], [0]]), "nominal")[0])
    assert np.isnan(cohen_kappa(np.array([0]), np.array([0]))[0])
    assert np.isnan(fleiss_kappa(np.array([[2, 0]]))[0])


def test_one_rater_and_the_empty_table():
    one = np.array([[0, 1, 1]])  # one labeller, three items: nothing to compare with
    alpha, stats = krippendorff_alpha(one, "nominal")
    assert np.isnan(alpha) and stats["alpha/pairable"] == 0.0 and "2 or more" in stats["alpha/undefined"]
    assert np.isnan(krippendorff_alpha(one[0], "nominal")[0])  # a 1-D array is one labeller too
    kappa, stats = fleiss_kappa(category_counts(one)[0])  # counts [[1, 0], [0, 1], [0, 1]]: n = 1
    assert np.isnan(kappa) and "1 rater per item" in stats["fleiss/undefined"]
    matrix, stats = pairwise_cohen_kappa(one)
    assert matrix.tolist() == [[1.0]] and stats["kappa/undefined"] == "fewer than two labellers"
    kappa, stats = cohen_kappa(one[0], np.full(3, M))
    assert np.isnan(kappa) and stats["kappa/n"] == 0.0
    for empty in (np.zeros((0, 0)), np.zeros((0, 4)), []):
        alpha, stats = krippendorff_alpha(empty, "ordinal")
        assert np.isnan(alpha) and stats["alpha/pairable"] == 0.0
        assert np.isnan(fleiss_kappa(category_counts(empty)[0])[0])
        assert np.isnan(pairwise_cohen_kappa(empty)[1]["kappa/mean"])
    assert np.isnan(cohen_kappa([], [])[0])
    per, stats = agreement_with_gold(np.zeros((0, 2), int), np.array([0, 1]))
    assert per.shape == (0,) and np.isnan(stats["gold/agreement"]) and "gold/undefined" in stats
    # only ties: no decided item -> the majority's disagreement share is undefined, not 0
    majority, stats = majority_vs_gold(np.array([[-1, -1]]), np.array([0, 1]))
    assert list(majority) == [-1, -1] and stats["gold/majority_decided"] == 0.0
    assert np.isnan(stats["gold/majority_disagreement"])


def test_disagreement_report_when_the_labellers_agree():
    # alice and bob both prefer "good" on the one pair they share; alice alone answered a second pair
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad", "labeller_id": "alice"},
        {"prompt": "p", "chosen": "good", "rejected": "bad", "labeller_id": "bob"},
        {"prompt": "q", "chosen": "meh", "rejected": "bad", "labeller_id": "alice"},
    ]
    utility = {"good": 1.0, "meh": 0.5, "bad": 0.0}
    report = disagreement_report(rows, gold_fn=lambda p, r: utility[r])
    assert np.isnan(report["krippendorff_alpha_nominal"])
    assert "expected disagreement is 0" in report["krippendorff_alpha_undefined"]
    assert report["agreement_with_gold"] == 1.0 and report["disagreement_rate"] == 0.0


def test_nan_is_a_missing_answer_like_the_missing_code():
    # a float table with NaN gaps (how pandas gives unanswered cells): before, cohen_kappa took NaN for a
    # category, so its items counted as answered (and as disagreements: NaN != NaN).
    # Shared items are the first four: a = 0 0 1 1, b = 0 1 1 1 -> p_o = 3/4;
    # p_e = P(a=0)P(b=0) + P(a=1)P(b=1) = 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> kappa = (3/4 - 1/2) / (1/2) = 0.5
    nan = float("nan")
    a = np.array([0, 0, 1, 1, nan, 1])
    b = np.array([0, 1, 1, 1, 0, nan])
    kappa, stats = cohen_kappa(a, b)
    assert kappa == pytest.approx(0.5) and stats["kappa/n"] == 4.0
    assert kappa == pytest.approx(
        cohen_kappa(np.nan_to_num(a, nan=MISSING), np.nan_to_num(b, nan=MISSING))[0]
    )
    table = np.stack([a, b])
    counts, cats = category_counts(table)
    assert cats.tolist() == [0.0, 1.0] and counts.sum() == 10  # 12 cells, 2 unanswered
    # gold NaN (unknown) is skipped, not a disagreement: labeller a agrees on items 0, 2, 3 of 0..3
    per, stats = agreement_with_gold(table, np.array([0, 0, 1, 1, nan, nan]))
    assert per.tolist() == pytest.approx([1.0, 0.75]) and stats["gold/n"] == 8.0
    majority, stats = majority_vs_gold(table, np.array([0, 1, 1, nan, 0, 1]))
    # votes per item: (0,0) (0,1) (1,1) (1,1) (-,0) (1,-) -> majority 0 -1 1 1 0 1; gold decided on 0,2,4,5
    assert stats["gold/majority_decided"] == 4.0 and stats["gold/majority_disagreement"] == 0.0


def test_nominal_agreement_on_binary_labels_worked_by_hand():
    """3 labellers x 4 binary items (1 = good, 0 = bad), 3 answers each:
    items (1,1,1), (1,1,0), (0,0,0), (1,0,0).
    Percent: agreeing pairs 3 + 1 + 3 + 1 = 8 of 4 * 3 = 12 -> 2/3.
    Fleiss: P_i = 1, 1/3, 1, 1/3 -> P_bar = 2/3; p_good = 6/12 -> P_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3.
    Krippendorff (nominal): coincidences o_bb = 0 + 0 + 3 + 1 = 4, o_gg = 3 + 1 + 0 + 0 = 4, o_bg = o_gb = 2
    (each item's pairs weighted 1 / (3 - 1)); n_b = n_g = 6, n = 12; D_o = 4 / 12 = 1/3,
    D_e = 2 * 6 * 6 / (12 * 11) = 6/11; alpha = 1 - (1/3) / (6/11) = 7/18."""
    from rlhf.feedback.agreement import nominal_agreement, percent_agreement

    table = np.array([[1, 1, 0, 1], [1, 1, 0, 0], [1, 0, 0, 0]])  # (L, I)
    alpha, stats = nominal_agreement(table)
    assert alpha == pytest.approx(7 / 18)
    assert stats["percent/agreement"] == pytest.approx(2 / 3)
    assert stats["fleiss/kappa"] == pytest.approx(1 / 3)
    assert stats["nominal/items"] == 4
    # a gap: item 3 has one answer and is left out; items (1,1) and (1,0) -> percent 1/2, Fleiss
    # P_bar = (1 + 0) / 2, p_good = 3/4 -> P_e = 10/16 -> kappa = (1/2 - 5/8) / (3/8) = -1/3; alpha 0
    gaps = np.array([[1, 1, MISSING], [1, 0, 1], [MISSING, MISSING, MISSING]])
    alpha, stats = nominal_agreement(gaps)
    assert alpha == pytest.approx(0.0) and stats["fleiss/kappa"] == pytest.approx(-1 / 3)
    assert percent_agreement(gaps)[0] == pytest.approx(0.5)
    # all good: percent 1, kappa and alpha 0/0 with the reason
    alpha, stats = nominal_agreement(np.ones((2, 3), int))
    assert np.isnan(alpha) and stats["percent/agreement"] == 1.0 and "0/0" in stats["alpha/undefined"]
    assert np.isnan(percent_agreement(np.array([[1, MISSING], [MISSING, 0]]))[0])
