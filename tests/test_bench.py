"""The benchmark commands run the real code paths and write their JSON (figures themselves are not asserted)."""

from __future__ import annotations

import json

import pytest

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
    for run in saved["runs"]:  # the update epochs: part of the iteration, at a rate below the machine's peak
        assert 0 < run["update_share"] < 1 and 0 < run["update_seconds"] < run["seconds_per_iteration"]
        assert run["update_peak_share"] == run["update_gflops"] / run["matmul_peak_gflops"]
        assert 0 < run["update_gflops"] and run["matmul_peak_gflops"] > 0


def test_bench_ppo_times_the_vllm_sampler_beside_ours(small_world, tmp_path):
    from tests.vllm_standin import standin_server

    with standin_server(small_world[1]) as (url, app):
        figures = bench_ppo(small_root(small_world), tmp_path / "ppo.json", iterations=1, batch_size=4,
                            variants=("grpo",), vllm_url=url)  # fmt: skip
        calls = list(app.state.faults.calls)
    ours, vllm = figures["runs"]
    assert (ours["rollout_engine"], vllm["rollout_engine"]) == ("ours", "vllm")
    assert ours["weight_sync_seconds"] == 0 < vllm["weight_sync_seconds"] < vllm["seconds_per_iteration"]
    # one prompt x 4 samples per iteration (a warm-up and a timed one), synced first and after each update
    assert calls.count("/v1/completions") == 2 and calls.count("/collective_rpc") == 3
    assert figures["command"] == f"rlhf bench ppo --vllm-url {url}"


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


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_every_training_bench_runs_on_a_model_of_ones_own(family_dir, tmp_path, capsys, family):
    """`rlhf bench reward|dpo|ilql|ppo --model DIR` times any causal LM (here random-weight GPT-2 without a
    pad token, and GPT-NeoX) and names it, with its size, in the figures."""
    from transformers import AutoModel, AutoModelForCausalLM

    from rlhf.cli import main

    model_dir = family_dir(family, n_positions=256)
    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in lm.parameters())
    small = ["--steps", "1", "--warmup", "1", "--batch-size", "4"]
    for bench, extra in [("reward", small), ("dpo", small), ("ilql", small),
                         ("ppo", ["--iterations", "1", "--variant", "grpo"])]:  # fmt: skip
        out = tmp_path / f"{bench}.json"
        args = [
            "bench",
            bench,
            "--model",
            str(model_dir),
            "--out",
            str(out),
            *extra,
            "--set",
            "run.progress=false",
        ]
        assert main(args) == 0, capsys.readouterr().err
        saved = json.loads(out.read_text())
        described = saved["configuration"]["backbone" if bench == "reward" else "policy"]
        assert described["model"] == str(model_dir) and described["model_type"] == lm.config.model_type
        if bench != "reward":  # the reward model adds its head to the trunk
            assert described["parameters"] == n_params
        else:  # the trunk without the LM head, and a reward head
            trunk = sum(p.numel() for p in AutoModel.from_pretrained(model_dir).parameters())
            assert trunk < described["parameters"] <= trunk + 10 * lm.config.hidden_size
        assert saved["command"].endswith(f"--model {model_dir}")


def test_bench_of_a_model_that_is_not_there_is_one_line(tmp_path, capsys):
    from rlhf.cli import main

    code = main(["bench", "dpo", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "nothing" in err
