"""Acquisition functions: hand-computed values, then the behaviour each one exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf.feedback.acquisition import (
    acquire,
    bald,
    binary_entropy,
    disagreement,
    fit_time_model,
    k_center_greedy,
    pair_distances,
    predictive_entropy,
    preference_probs,
    set_preference_probs,
    within_set_pairs,
)


def test_preference_probs_is_sigmoid_of_the_difference():
    p = preference_probs(np.array([[1.0, 0.0]]), np.array([[1.0, math.log(3.0)]]))
    # sigmoid(0) = 0.5; sigmoid(-ln 3) = 1 / (1 + 3) = 0.25
    assert p == pytest.approx(np.array([[0.5, 0.25]]))


def test_bald_entropy_disagreement_by_hand():
    probs = np.array([[0.1, 0.9], [0.5, 0.5], [0.0, 1.0], [0.9, 0.9]])
    h01 = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))  # 0.3251
    mi, _ = bald(probs)
    # row 0: H(0.5) - (H(0.1) + H(0.9)) / 2 = ln 2 - 0.3251 = 0.3681; row 1: all members unsure -> 0;
    # row 2: members certain and opposite -> ln 2; row 3: agree -> 0
    assert mi == pytest.approx([math.log(2) - h01, 0.0, math.log(2), 0.0], abs=1e-9)
    assert mi[0] == pytest.approx(0.3681, abs=1e-4)
    ent, _ = predictive_entropy(probs)
    assert ent == pytest.approx([math.log(2), math.log(2), math.log(2), h01], abs=1e-9)
    std, _ = disagreement(probs)
    assert std == pytest.approx([0.4, 0.0, 0.5, 0.0])
    assert binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_bald_ignores_coin_flips_entropy_does_not():
    probs = np.array([[0.5, 0.5, 0.5], [0.2, 0.5, 0.8], [0.95, 0.97, 0.96]])
    rng = np.random.default_rng(0)
    assert acquire("bald", probs, 1, rng)[0][0] == 1
    assert acquire("disagreement", probs, 1, rng)[0][0] == 1
    # the coin flip (row 0) and the disagreement (row 1) both have mean 0.5, so entropy ties them
    assert set(acquire("entropy", probs, 2, rng)[0]) == {0, 1}


def test_pair_distance_treats_a_b_and_b_a_alike():
    x = np.array([[1.0, 2.0], [3.0, 0.0]])
    d = pair_distances(x, -x)
    assert d[0, 0] == pytest.approx(0.0) and d[1, 1] == pytest.approx(0.0)
    # (1,2) vs (-3,0): |x - y| = |(4,2)| = sqrt(20), |x + y| = |(-2,2)| = sqrt(8) -> sqrt(8)
    assert d[0, 1] == pytest.approx(math.sqrt(8))


def test_k_center_spreads_the_batch():
    # 50 copies of one question and 2 distinct ones: k-center asks each once, top-k repeats the copy
    emb = np.array([[1.0, 0.0]] * 50 + [[0.0, 1.0], [-1.0, -1.0]])
    weights = np.array([1.0] * 50 + [0.5, 0.5])
    picks, _ = k_center_greedy(emb, 3, weights)
    assert picks[0] < 50 and set(picks[1:]) == {50, 51}
    # already-labelled copies push the first pick away from them
    picks, _ = k_center_greedy(emb, 1, weights, labelled=np.array([[1.0, 0.0]]))
    assert picks[0] in (50, 51)
    probs = np.tile(np.array([[0.1, 0.9]]), (52, 1))
    probs[50:] = [0.3, 0.7]
    picks, stats = acquire("diverse", probs, 3, np.random.default_rng(0), embeddings=emb)
    assert {50, 51} <= set(picks) and stats["acquisition/k_center_radius"] == pytest.approx(0.0)


def test_cost_aware_prefers_cheap_information():
    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.3, 0.7]])
    costs = np.array([60.0, 20.0, 10.0])
    # BALD 0.368 / 60 s, 0.368 / 20 s = 0.0184, BALD(0.3, 0.7) = 0.0823 / 10 s = 0.0082
    picks, _ = acquire("cost", probs, 3, np.random.default_rng(0), costs=costs)
    assert list(picks) == [1, 2, 0]


def test_random_is_a_permutation_and_ties_break_randomly():
    probs = np.full((20, 4), 0.5)
    a, _ = acquire("random", probs, 20, np.random.default_rng(0))
    assert sorted(a) == list(range(20))
    b, _ = acquire("bald", probs, 5, np.random.default_rng(1))
    assert list(b) != [0, 1, 2, 3, 4]  # all-zero BALD: not simply the first five
    with pytest.raises(ValueError):
        acquire("magic", probs, 2, np.random.default_rng(0))


def test_fit_time_model_recovers_a_line():
    words = np.array([10.0, 20.0, 40.0, 80.0])
    seconds = 8.0 + 0.25 * words  # the panel's default timing model without noise
    coef, stats = fit_time_model(words, seconds)
    assert coef == pytest.approx([8.0, 0.25]) and stats["time/r2"] == pytest.approx(1.0)
    coef, _ = fit_time_model(np.array([5.0, 5.0]), np.array([3.0, 5.0]))
    assert coef == pytest.approx([4.0, 0.0])


def test_set_candidates_score_the_sum_of_their_pairs():
    i, j = within_set_pairs(3)
    assert i.tolist() == [0, 0, 1] and j.tolist() == [1, 2, 2]
    # set 0: members disagree about response 0 vs the rest; set 1: every member scores all three alike
    scores = np.array([[[2.0, -2.0], [0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    probs = set_preference_probs(scores)  # (2 sets, 3 pairs, 2 members)
    assert probs.shape == (2, 3, 2)
    s2 = 1 / (1 + math.exp(-2.0))
    assert probs[0] == pytest.approx(np.array([[s2, 1 - s2], [s2, 1 - s2], [0.5, 0.5]]))
    picks, stats = acquire("bald", probs, 2, np.random.default_rng(0))
    assert picks.tolist() == [0, 1]
    # BALD of set 0 = 2 x (ln 2 - H(sigmoid 2)) + 0, set 1 = 0
    h = -(s2 * math.log(s2) + (1 - s2) * math.log(1 - s2))
    assert stats["acquisition/score_batch"] == pytest.approx((2 * (math.log(2) - h) + 0.0) / 2)
    # every pair of both sets has mean probability 1/2, so entropy scores both sets 3 ln 2 alike
    _, stats = acquire("entropy", probs, 1, np.random.default_rng(0))
    assert stats["acquisition/score_pool"] == pytest.approx(3 * math.log(2))
    with pytest.raises(ValueError, match="pairs, not on K-sets"):
        acquire("diverse", probs, 1, np.random.default_rng(0), embeddings=np.zeros((2, 4)))
