"""The benchmark commands run the real code paths and write their JSON (figures themselves are not asserted)."""

from __future__ import annotations

import json

from rlhf.bench import bench_ppo, bench_reward
from rlhf.config_root import load_root_config


def small_root(small_world):
    cfg = load_root_config(None, ["run.progress=false", "run.device=cpu"])
    cfg.world = small_world[0]
    return cfg


def test_bench_reward_writes_figures(small_world, tmp_path):
    figures = bench_reward(small_root(small_world), tmp_path / "reward.json", steps=2, warmup=1, batch_size=4)
    saved = json.loads((tmp_path / "reward.json").read_text())
    assert saved["runs"][0]["pairs_per_second"] == figures["runs"][0]["pairs_per_second"] > 0
    assert saved["runs"][0]["timed_steps"] == 2 and saved["machine"]["cores"] >= 1


def test_bench_ppo_writes_figures(small_world, tmp_path):
    figures = bench_ppo(
        small_root(small_world), tmp_path / "ppo.json", iterations=1, batch_size=4, variants=("ppo", "grpo")
    )
    saved = json.loads((tmp_path / "ppo.json").read_text())
    assert [r["variant"] for r in saved["runs"]] == ["ppo", "grpo"]
    assert saved["runs"][0]["episodes_per_second"] == figures["runs"][0]["episodes_per_second"] > 0
    assert 0 < saved["runs"][0]["generation_share"] < 1 and saved["plain_generate_tokens_per_second"] > 0
    assert saved["runs"][1]["prompts_x_samples"] == "1 x 4"


def test_bench_dpo_writes_figures(small_world, tmp_path):
    from rlhf.bench import bench_dpo

    figures = bench_dpo(small_root(small_world), tmp_path / "dpo.json", steps=2, warmup=1, batch_size=4)
    saved = json.loads((tmp_path / "dpo.json").read_text())
    row = saved["runs"][0]
    assert row["pairs_per_second"] == figures["runs"][0]["pairs_per_second"] > 0
    assert (
        row["timed_steps"] == 2 and 0 < row["pairs_per_second_with_reference_pass"] < row["pairs_per_second"]
    )


def test_bench_ilql_writes_figures(small_world, tmp_path):
    from rlhf.bench import bench_ilql

    figures = bench_ilql(small_root(small_world), tmp_path / "ilql.json", steps=2, warmup=1, batch_size=4)
    saved = json.loads((tmp_path / "ilql.json").read_text())
    assert [r["trained"] for r in saved["runs"]] == ["heads only (default)", "heads and the whole LM"]
    assert saved["runs"][0]["responses_per_second"] == figures["runs"][0]["responses_per_second"] > 0
