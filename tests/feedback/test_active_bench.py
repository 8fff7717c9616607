"""`rlhf bench active` end to end on tiny settings, and its summary arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlhf.active import (
    ActiveConfig,
    bench_active,
    fit_linear_heads,
    labels_to_reach,
    mean_interval,
    parse_method,
    results_record,
    summarise,
)
from rlhf.errors import ConfigError


def test_labels_to_reach_needs_the_curve_to_stay_above():
    curve = [[250, 0.70], [500, 0.60], [750, 0.66], [1000, 0.67]]
    assert labels_to_reach(curve, 0.65) == 750  # the lucky first point does not count
    assert labels_to_reach(curve, 0.69) is None


def test_summary_interval_and_schema():
    # two seeds: 0.6 and 0.8 -> mean 0.7, std 0.1414, t(0.975, 1) = 12.706 -> half 12.706 * 0.1414 / sqrt 2 = 1.2706
    mean, half = mean_interval([0.6, 0.8])
    assert mean == pytest.approx(0.7) and half == pytest.approx(1.2706, abs=1e-3)
    cfg = ActiveConfig(target_labels=20)
    curves = {
        "random": [[[10, 0.5], [20, 0.6]], [[10, 0.5], [20, 0.6]]],
        "bald": [[[10, 0.5], [20, 0.7]], [[10, 0.7], [20, 0.7]]],
    }
    record = results_record(summarise(curves, cfg))
    assert record["random_labels"] == 20 and record["random_accuracy"] == pytest.approx(0.6)
    assert record["methods"]["bald"] == {"labels_to_match_random": 10, "curve": [[10, 0.6], [20, 0.7]]}
    assert record["methods"]["random"]["labels_to_match_random"] == 20


def test_summary_in_labelling_seconds():
    cfg = ActiveConfig(target_labels=20)
    # random: 20 labels cost 200 s and reach 0.6; a ranking method: 10 labels cost 150 s and reach 0.62
    curves = {
        "random": [[[10, 0.5, 100.0], [20, 0.6, 200.0]]],
        "ranking:random": [[[10, 0.62, 150.0], [20, 0.7, 300.0]]],
    }
    result = summarise(curves, cfg)
    assert result["random_seconds"] == pytest.approx(200.0)
    ranked = result["methods"]["ranking:random"]
    assert ranked["labels_to_match_random"] == 10
    assert ranked["seconds_to_match_random"] == pytest.approx(150.0)
    record = results_record(result)
    assert record["random_seconds"] == pytest.approx(200.0)
    assert record["methods"]["ranking:random"]["seconds_to_match_random"] == pytest.approx(150.0)


def test_method_names_and_their_errors():
    assert parse_method("bald") == ("pairs", "bald")
    assert parse_method("ranking:bald") == ("ranking", "bald")
    ActiveConfig(methods=["random", "ranking:random", "ranking:cost"]).validate()
    with pytest.raises(ConfigError, match="ranking:nope"):
        ActiveConfig(methods=["random", "ranking:nope"]).validate()
    with pytest.raises(ConfigError, match="no ranking: form"):
        ActiveConfig(methods=["ranking:diverse"]).validate()
    with pytest.raises(ConfigError, match="ranking_size"):
        ActiveConfig(ranking_size=1).validate()


def test_a_ranking_of_two_fits_the_heads_a_comparison_does():
    # Plackett-Luce on K = 2 is Bradley-Terry: the same labels as pairs or as 2-rankings give the same heads
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    chosen, rejected = np.arange(0, 20), np.arange(20, 40)
    none = np.array([], dtype=np.int64)
    as_pairs = fit_linear_heads(x, chosen, rejected, np.zeros(20, bool), np.ones(20), 1, 0, 1e-2)
    as_rankings = fit_linear_heads(x, none, none, np.zeros(0, bool), np.ones(0), 1, 0, 1e-2,
                                   rankings=np.stack([chosen, rejected], axis=1))  # fmt: skip
    assert np.abs(as_pairs).max() > 0.1
    assert as_rankings == pytest.approx(as_pairs, abs=1e-4)


def test_heads_learn_the_utility_from_noisy_rankings():
    rng = np.random.default_rng(1)
    w_true = rng.standard_normal(8)
    x = rng.standard_normal((600, 8))
    sets = rng.permutation(600).reshape(100, 6)  # 100 rankings of 6
    gumbel = rng.gumbel(size=sets.shape)
    rankings = np.take_along_axis(sets, np.argsort(-(x[sets] @ w_true + gumbel), axis=1), axis=1)
    none = np.array([], dtype=np.int64)
    heads = fit_linear_heads(x, none, none, np.zeros(0, bool), np.ones(0), 3, 0, 1e-3, rankings=rankings)
    cosine = heads.mean(0) @ w_true / np.linalg.norm(heads.mean(0)) / np.linalg.norm(w_true)
    assert cosine > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("train", ["heads", "full"])
def test_bench_active_tiny(small_world, tmp_path, train):
    world_cfg, _ = small_world
    cfg = ActiveConfig(
        methods=["random", "bald", "diverse", "cost", "ranking:random", "ranking:bald"]
        if train == "heads"
        else ["random", "bald", "ranking:entropy"],
        ranking_size=3,
        seeds=2 if train == "heads" else 1,
        initial_labels=20, batch_labels=20, max_labels=60, target_labels=60,
        pool_size=120, test_size=60, ensemble_size=3, epochs=1, max_length=64, train=train,
    )  # fmt: skip
    result = bench_active(cfg, tmp_path / "active", world=world_cfg, log=lambda _: None)
    saved = json.loads((tmp_path / "active.json").read_text())
    assert (tmp_path / "active.png").stat().st_size > 1000
    assert set(saved["methods"]) == set(cfg.methods) and saved["random_labels"] == 60
    for m in saved["methods"].values():
        assert [n for n, _ in m["curve"]] == [20, 40, 60]
        assert all(0.0 <= a <= 1.0 for _, a in m["curve"])
    assert len(result["per_seed"]["random"]) == cfg.seeds
    # every method of a feedback type starts from the same random batch with the same labels, so the
    # first point agrees; a ranking takes longer than a comparison, so the same labels cost more seconds
    pairs = {name: m for name, m in saved["methods"].items() if not name.startswith("ranking:")}
    rankings = {name: m for name, m in saved["methods"].items() if name.startswith("ranking:")}
    assert len({m["curve"][0][1] for m in pairs.values()}) == 1
    assert len({m["curve"][0][1] for m in rankings.values()}) == 1
    assert all(m["seconds"][0] > saved["methods"]["random"]["seconds"][0] for m in rankings.values())
    assert saved["random_seconds"] == pytest.approx(saved["methods"]["random"]["seconds"][-1])


def test_routed_method_names_and_their_errors():
    assert parse_method("routed:entropy") == ("routed", "entropy")
    ActiveConfig(methods=["random", "routed:bald", "routed:random"], gold_share=0.1).validate()
    with pytest.raises(ConfigError, match="routed:diverse"):
        ActiveConfig(methods=["routed:diverse"]).validate()
    with pytest.raises(ConfigError, match="gold_share"):
        ActiveConfig(gold_share=1.0).validate()
    with pytest.raises(ConfigError, match="route_floor"):
        ActiveConfig(route_floor=0.3, route_cap=0.2).validate()


@pytest.mark.slow
def test_bench_active_routed_tiny(small_world, tmp_path):
    # routed methods on a panel of 6 with 2 spammers: every task counts (gold questions and repeats too),
    # every labeller gets the floor, and the routing report says who was asked what
    world_cfg, _ = small_world
    cfg = ActiveConfig(
        methods=["random", "routed:bald", "routed:entropy"], seeds=1, initial_labels=20, batch_labels=20,
        max_labels=60, target_labels=60, pool_size=120, test_size=60, ensemble_size=3, max_length=64,
        train="heads", labellers=6, spammers=2, length_judges=1, refusal_labellers=0, gold_share=0.1,
        route_floor=0.05, route_cap=0.5,
    )  # fmt: skip
    result = bench_active(cfg, tmp_path / "active", world=world_cfg, log=lambda _: None)
    for name in cfg.methods:
        assert [n for n, _ in result["methods"][name]["curve"]] == [20, 40, 60]
    for name in ("routed:bald", "routed:entropy"):
        report = result["routing"][name][0]
        assert report["gold_questions"] == 4  # 0.1 * 20, two acquisition rounds
        assert sum(report["tasks"]) == 60 and min(report["tasks"]) >= 1  # floor: 0.05 * 20 = 1 a round
        assert 0.0 <= report["crossfit_separation"] <= 1.0 and report["repeats"] <= 4  # 0.1 * 20 a round
        assert report["kind"].count("spammer") == 2 and len(report["estimated_rationality"]) == 6
    # the same first batch and answers for every method: the first point agrees
    assert len({m["curve"][0][1] for m in result["methods"].values()}) == 1
