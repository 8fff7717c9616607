"""Joint (query, labeller) acquisition (rlhf.feedback.routing) and the bench's router (rlhf.active_route)."""

import numpy as np
import pytest

from rlhf.feedback.acquisition import bald
from rlhf.feedback.routing import (
    answers_disagree,
    assign,
    fairness_bounds,
    info_per_second,
    labeller_bald,
    labeller_member_probs,
)


def test_labeller_bald_by_hand():
    # members d = (-2, 2); beta 1: P = (0.1192, 0.8808), mean 0.5, I = ln 2 - H(0.1192) = 0.6931 - 0.3653
    # = 0.3278; beta 0 (a spammer): P = (0.5, 0.5), I = 0; beta 2: P = (0.0180, 0.9820),
    # I = ln 2 - H(0.0180) = 0.6931 - 0.0901 = 0.6031
    info, stats = labeller_bald(np.array([[-2.0, 2.0]]), np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(info, [[0.3278, 0.0, 0.6031]], atol=1e-4)
    assert stats["routing/info_mean"] == pytest.approx((0.3278 + 0.6031) / 3, abs=1e-4)


def test_labeller_bald_with_an_offset_by_hand():
    # d = (-1, 1), beta 1, offset +1 (e.g. a length habit on this query): logits (0, 2), P = (0.5, 0.8808),
    # mean 0.6904; I = H(0.6904) - (H(0.5) + H(0.8808)) / 2 = 0.6189 - (0.6931 + 0.3653) / 2 = 0.0895
    info, _ = labeller_bald(np.array([[-1.0, 1.0]]), np.array([1.0]), np.array([[1.0]]))
    assert info[0, 0] == pytest.approx(0.0895, abs=1e-4)
    # an offset pushes the answer towards one side whatever the members say, so it tells less than none
    assert info[0, 0] < labeller_bald(np.array([[-1.0, 1.0]]), np.array([1.0]))[0][0, 0]


def test_labeller_of_rationality_one_is_the_ensembles_own_bald():
    # beta 1, no offset: the labeller answers by the members' own Bradley-Terry probabilities
    d = np.random.default_rng(0).standard_normal((20, 4))
    probs = labeller_member_probs(d, np.array([1.0]))[:, 0]  # (N, M)
    np.testing.assert_allclose(labeller_bald(d, np.array([1.0]))[0][:, 0], bald(probs)[0], atol=1e-12)


def test_info_per_second_by_hand():
    # 0.36 nats in 12 s = 0.03 nats/s = 108 nats/hour; 0 nats in 4 s = 0
    score, stats = info_per_second(np.array([[0.36, 0.0]]), np.array([[12.0, 4.0]]))
    np.testing.assert_allclose(score, [[0.03, 0.0]])
    assert stats["routing/nats_per_hour_mean"] == pytest.approx(54.0)
    with pytest.raises(ValueError, match="same"):
        info_per_second(np.zeros((2, 3)), np.ones((3, 2)))


def test_fairness_bounds_by_hand():
    # 0.02 * 250 = 5 each (55 of 250 in all); 0.25 * 250 = 62.5 -> 63
    assert fairness_bounds(250, 11, 0.02, 0.25) == (5, 63)
    # floors that would not fit are lowered (10 // 4 = 2), caps that cannot cover the batch raised (ceil 10/4 = 3)
    assert fairness_bounds(10, 4, 0.5, 0.1) == (2, 3)


def test_assign_by_hand():
    score = np.array([[3.0, 1.0], [2.0, 0.0], [1.0, 5.0]])
    # no limits: best overall first: (q2, l1) = 5, (q0, l0) = 3, (q1, l0) = 2
    (q, lab), _ = assign(score, 3)
    assert q.tolist() == [2, 0, 1] and lab.tolist() == [1, 0, 0]
    # cap 1: after (q2, l1) and (q0, l0) both labellers are full: only 2 tasks
    (q, lab), _ = assign(score, 3, cap=1)
    assert q.tolist() == [2, 0] and lab.tolist() == [1, 0]


def test_assign_floor_keeps_everyone_busy_and_cap_stops_flooding():
    score = np.array([[9.0, 1.0], [8.0, 1.0], [7.0, 1.0], [6.0, 1.0]])  # labeller 0 is better everywhere
    (q, lab), _ = assign(score, 4)
    assert lab.tolist() == [0, 0, 0, 0]
    # floor 1: labeller 0 takes q0, labeller 1 its best free query (ties: by index) q1; then the best
    # left: (q2, l0) = 7; (q3, l0) would exceed cap 2, so (q3, l1)
    (q, lab), stats = assign(score, 4, floor=1, cap=2)
    assert q.tolist() == [0, 1, 2, 3] and lab.tolist() == [0, 1, 0, 1]
    assert stats["routing/floor_tasks"] == 2 and stats["routing/max_share"] == 0.5
    with pytest.raises(ValueError, match="floor"):
        assign(score, 4, floor=3, cap=2)


def test_assign_never_uses_a_masked_pair():
    # a repeat row: labeller 0 answered it already (-inf), so only labeller 1 may take it
    score = np.array([[-np.inf, 0.2], [0.1, 0.1]])
    (q, lab), _ = assign(score, 2)
    assert sorted(zip(q.tolist(), lab.tolist(), strict=True)) == [(0, 1), (1, 0)]


def test_answers_disagree_by_hand():
    # split answers; one answer with the prediction (left); one against it; nothing answered
    out = answers_disagree([[0, 1], [0], [1], []], np.array([True, True, True, True]))
    assert out.tolist() == [True, False, True, False]


def test_router_finds_the_spammer_and_the_length_judge_and_routes_around_them():
    # a panel of 3 careful labellers, a length judge and a spammer answer 600 world pairs; the "reward
    # model" is the gold utility difference with member noise, so the quality fit sees what a good RM
    # would. The router must rank the careful labellers above both and give those two only the floor.
    from rlhf.active import ActiveConfig
    from rlhf.active_route import Router
    from rlhf.world import gold
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import Labeller, LabellerSpec, Panel

    specs = [LabellerSpec(name=f"g{i}", rationality=2.0) for i in range(3)]
    specs += [LabellerSpec(name="len", objective="length"), LabellerSpec(name="spam", spammer=True)]
    panel = Panel([Labeller(s) for s in specs])
    pairs = sample_pairs(900, 5)
    pool = [(p, [a, b]) for p, a, b in pairs]
    words = np.array([len(" ".join([p, a, b]).split()) for p, a, b in pairs], float)
    diff = np.array([gold.utility(p, a) - gold.utility(p, b) for p, a, b in pairs])
    members = diff[:, None] + 0.3 * np.random.default_rng(0).standard_normal((len(pairs), 4))  # (N, 4)
    cfg = ActiveConfig(route_floor=0.04, route_cap=0.5)
    router = Router(panel, pool, words, cfg, seed=0)
    rng = np.random.default_rng(1)
    for i in range(600):
        who = i % len(panel)
        p, (a, b) = pool[i]
        answer = panel.labellers[who].compare(p, a, b, rng)
        router.record(i, who, answer.choice, float(members[i].mean()), answer.seconds)
    router.ask_gold(10)
    q = router.fit(members.mean(1))
    assert q["rationality"][:3].min() > max(q["rationality"][3], q["rationality"][4])
    assert q["weights"][3, 1] > q["weights"][:3, 1].max()  # the length judge's weight is on length
    chosen, who, stats = router.choose(members, np.arange(600, 900), 100, rng)
    counts = np.bincount(who, minlength=5)
    assert counts.sum() == 100 and counts[3] == counts[4] == 4  # the floor (0.04 * 100), no more
    assert router.report()["gold_questions"] == 10
