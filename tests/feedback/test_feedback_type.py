"""Adaptive feedback type: Fisher informations checked by hand and numerically, then the choice's behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf.feedback.feedback_type import (
    RATING_CUTS,
    RATING_NOISE,
    binary_fisher,
    choose_feedback_type,
    information,
    pairwise_fisher,
    plackett_luce_fisher,
    rating_fisher,
)


def test_pairwise_fisher_by_hand():
    # d = 0: P = 1/2, dP/dd = beta / 4, I = (beta/4)^2 / (1/4) = beta^2 / 4; with eps the slope is (1 - eps) x
    assert pairwise_fisher(0.0, 2.0, 0.0) == pytest.approx(1.0)
    assert pairwise_fisher(0.0, 2.0, 0.1) == pytest.approx(0.81)
    # a spammer (beta 0) or a certain pair carries no information
    assert pairwise_fisher(0.3, 0.0, 0.1) == 0.0
    assert pairwise_fisher(10.0, 5.0, 0.0) == pytest.approx(0.0, abs=1e-12)


def test_plackett_luce_of_two_is_a_comparison():
    beta, d = 1.5, 0.4
    g = np.array([1.0, -1.0])
    expected = pairwise_fisher(d, beta, 0.0) * np.outer(g, g)
    assert plackett_luce_fisher(np.array([d, 0.0]), beta, 0.0) == pytest.approx(expected)
    # three equal items: stage 1 adds diag(1/3) - 1/9 (2/9 on the diagonal); at stage 2, in the 2/3 of
    # orderings where item 0 is still in, it adds 1/2 * 1/2 = 1/4: F00 = 2/9 + 1/6 = 7/18; rows sum to 0
    f = plackett_luce_fisher(np.zeros(3), 1.0, 0.0)
    assert f.sum(axis=1) == pytest.approx(np.zeros(3), abs=1e-12)
    assert f[0, 0] == pytest.approx(1 / 3 - 1 / 9 + 2 / 3 * 1 / 4)


def test_rating_fisher_matches_the_score_variance():
    u, beta, eps = 0.2, 1.3, 0.1

    def probs(v):
        z = np.concatenate([[-np.inf], beta * (np.asarray(RATING_CUTS) - v) / RATING_NOISE, [np.inf]])
        return eps / 7 + (1 - eps) * np.diff(1 / (1 + np.exp(-z)))

    h = 1e-5
    score = (np.log(probs(u + h)) - np.log(probs(u - h))) / (2 * h)  # d log P_k / du
    assert rating_fisher(u, beta, eps) == pytest.approx(float((probs(u) * score**2).sum()), rel=1e-6)


def test_information_is_the_gaussian_entropy_drop():
    # one item, prior std 2, Fisher 3: 0.5 log(1 + 4 * 3) = 0.5 log 13
    assert information(np.array([[3.0]]), np.array([2.0])) == pytest.approx(0.5 * math.log(13))


def test_noisier_labeller_gets_a_rating_careful_one_a_comparison():
    mu, std, words = np.array([0.1, 0.1]), np.full(2, 0.5), np.array([20.0, 20.0])
    without_binary = ("pairwise", "ranking", "rating")  # binary is the next test's
    noisy, _ = choose_feedback_type(mu, std, words, 10, beta=0.5, kinds=without_binary)
    careful, stats = choose_feedback_type(mu, std, words, 10, beta=10.0, kinds=without_binary)
    # a rating costs one response's reading and its information does not need a careful judge, but
    # the labeller's unknown scale offset caps it; a comparison's grows with beta^2
    assert noisy["kind"] == "rating" and careful["kind"] == "pairwise"
    assert stats["type/pairwise_nats_per_s"] > stats["type/rating_nats_per_s"]


def test_ranking_for_several_short_answers_not_for_long_ones():
    mu, std = np.array([0.2, 0.0, -0.3, 0.5]), np.full(4, 0.5)
    short, _ = choose_feedback_type(mu, std, np.array([20, 25, 15, 30.0]), 10, beta=3.0)
    assert short == {"kind": "ranking", "items": [0, 1, 2, 3]}
    long_, _ = choose_feedback_type(mu, std, np.array([200, 250, 150, 300.0]), 10, beta=1.2)
    assert long_["kind"] != "ranking"


def test_binary_fisher_by_hand():
    # at the bar (u = t): P0 = 1/2, dP/du = (beta / noise) / 4 with noise 1/sqrt 2, so
    # I = (sqrt 2 beta / 4)^2 / (1/4) = beta^2 / 2 -> 2 for beta 2; mistakes scale the slope by 0.9 and
    # leave P = 1/2: 2 * 0.81 = 1.62
    assert binary_fisher(0.175, 2.0, 0.0, threshold=0.175) == pytest.approx(2.0)
    assert binary_fisher(0.175, 2.0, 0.1, threshold=0.175) == pytest.approx(1.62)
    # it is a rating with one cut, and far from the bar the answer is foregone
    for u in (-0.4, 0.2, 0.9):
        assert binary_fisher(u, 1.3, 0.1, threshold=0.175) == pytest.approx(
            rating_fisher(u, 1.3, 0.1, cuts=(0.175,))
        )
    assert binary_fisher(3.0, 3.0, 0.0) < 1e-3 * binary_fisher(0.175, 3.0, 0.0)
    assert binary_fisher(0.3, 0.0, 0.1) == 0.0  # a spammer tells nothing


def test_binary_option_value_and_time_by_hand():
    """Two responses at the bar (mu 0.175, std 0.5, 20 words, 10-word prompt), beta 2, eps 0.1:
    I = 1.62 (above); the unknown bar offset (tau_b 0.3) discounts it to 1.62 / (1 + 0.09 * 1.62) = 1.41386;
    information 0.5 log(1 + 0.25 * 1.41386) = 0.5 log 1.35347 = 0.15133 nats; time 0.5 * 8 + 0.25 * (10 + 20) = 11.5 s
    (a rating of it: 8 + 7.5 = 15.5 s, a comparison 8 + 12.5 = 20.5 s)."""
    mu, std, words = np.full(2, 0.175), np.full(2, 0.5), np.array([20.0, 20.0])
    choice, stats = choose_feedback_type(mu, std, words, 10, beta=2.0, eps=0.1)
    discounted = 1.62 / (1 + 0.09 * 1.62)
    assert discounted == pytest.approx(1.41386, abs=1e-5)
    assert stats["type/binary_nats"] == pytest.approx(0.5 * math.log(1 + 0.25 * discounted))
    assert stats["type/binary_nats"] == pytest.approx(0.15133, abs=1e-5)
    assert (stats["type/binary_seconds"], stats["type/rating_seconds"], stats["type/pairwise_seconds"]) == (
        11.5,
        15.5,
        20.5,
    )
    assert choice == {"kind": "binary", "items": [0]}
    # a careful labeller on a close pair still gets a comparison; a noisy one a good / bad question
    close = np.array([0.1, 0.1])
    assert choose_feedback_type(close, std, words, 10, beta=10.0)[0]["kind"] == "pairwise"
    assert choose_feedback_type(close, std, words, 10, beta=0.5)[0]["kind"] == "binary"
    # answers far above the bar: "good" is a foregone answer, the rating's upper cuts still tell
    high = np.array([1.5, 1.4])
    _, far = choose_feedback_type(high, std, words, 10, beta=3.0)
    assert far["type/binary_nats_per_s"] < far["type/rating_nats_per_s"]
    with pytest.raises(ValueError, match="kinds must be some of"):
        choose_feedback_type(close, std, words, 10, beta=1.0, kinds=("thumbs",))


def test_per_labeller_choice_follows_each_labellers_estimated_rationality():
    from rlhf.feedback.feedback_type import choose_per_labeller

    mu, std, words = np.array([0.1, 0.1]), np.full(2, 0.5), np.array([20.0, 20.0])
    # the same close pair as above: the careful labeller (10) compares, the noisy one (0.5) and a spammer
    # whose estimate came out below zero get a good / bad question (the cheapest kind when nothing is
    # learnt from any)
    choices, stats = choose_per_labeller(mu, std, words, 10, np.array([10.0, 0.5, -0.2]))
    assert [c["kind"] for c in choices] == ["pairwise", "binary", "binary"]
    assert stats["type/per_labeller_pairwise"] == 1 and stats["type/per_labeller_binary"] == 2
    # one labeller alone gives the single-labeller chooser's answer
    alone, _ = choose_feedback_type(mu, std, words, 10, beta=10.0)
    assert choose_per_labeller(mu, std, words, 10, np.array([10.0]))[0] == [alone]
