"""Agreement statistics against published worked examples (and the reference libraries)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.feedback.agreement import (
    MISSING,
    agreement_with_gold,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    majority_vs_gold,
    pairwise_cohen_kappa,
)

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
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[1, 1], [2, 0], [0, 1]]))  # unequal raters per item


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
