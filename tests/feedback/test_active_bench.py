"""`rlhf bench active` end to end on tiny settings, and its summary arithmetic."""

from __future__ import annotations

import json

import pytest

from rlhf.active import ActiveConfig, bench_active, labels_to_reach, mean_interval, results_record, summarise


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


@pytest.mark.slow
@pytest.mark.parametrize("train", ["heads", "full"])
def test_bench_active_tiny(small_world, tmp_path, train):
    world_cfg, _ = small_world
    cfg = ActiveConfig(
        methods=["random", "bald", "diverse", "cost"] if train == "heads" else ["random", "bald"],
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
    # every method starts from the same random batch with the same labels, so the first point agrees
    assert len({m["curve"][0][1] for m in saved["methods"].values()}) == 1
