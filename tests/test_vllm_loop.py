"""The loop's candidate pools and evaluations, and `rlhf eval`, sampled by a vLLM server (the loopback
stand-in): one engine follows each policy that samples, and the figures come from the server's samples."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlhf.errors import UserError
from tests.test_loop import tiny_root
from tests.vllm_standin import standin_server


def test_loop_samples_pools_and_evaluations_through_the_engine(small_world, tmp_path):
    from rlhf.loop import run_loop

    _, world_dir = small_world
    with standin_server(world_dir) as (url, app):
        root = tiny_root(world_dir, "loop.rounds=1", "ppo.rollout_engine=vllm", f"ppo.vllm_url={url}")
        result = run_loop(root, tmp_path / "run", show_progress=False, log=lambda *_: None)
        calls = list(app.state.faults.calls)
    # synced for round 0's evaluation of the initial policy, for round 1's pool (loaded afresh), by PPO
    # before its first rollout and after each of its 2 updates, for the evaluation of the trained policy
    assert calls.count("/collective_rpc") == 1 + 1 + 3 + 1
    assert calls.count("/v1/completions") >= 24 + 16 + 4  # round 0: one request per evaluation prompt
    pool = [json.loads(line) for line in (tmp_path / "run" / "round_01" / "pool.jsonl").open()]
    assert pool and all(r["a"] != r["b"] for r in pool)
    assert result.rounds[1]["eval"]["kl"] >= 0 and "gold_helpfulness" in result.rounds[1]["eval"]
    assert (tmp_path / "run" / "vllm_weights" / "config.json").is_file()  # the run's one weights directory
    assert not (tmp_path / "run" / "round_01" / "policy" / "vllm_weights").exists()
    # the report shows the sampler/trainer mismatch of PPO's iterations
    from rlhf.evaluation.report import write_report

    assert 'src="plots/mismatch.png"' in write_report(tmp_path / "run").read_text()
    assert (tmp_path / "run" / "plots" / "mismatch.png").read_bytes()[:4] == b"\x89PNG"


def test_ppo_train_says_how_far_the_sampler_was_from_the_trainer(small_world, tmp_path):
    from rlhf.cli import app as cli

    _, world_dir = small_world
    with standin_server(world_dir) as (url, _):
        out = CliRunner().invoke(cli, [
            "ppo", "train", "--policy", str(world_dir), "--reward", "tests.algorithms.test_ppo:says_sure",
            "--out", str(tmp_path / "p"), "--set", "ppo.steps=2", "--set", "ppo.batch_size=8",
            "--set", "ppo.mini_batch_size=8", "--set", "ppo.n_world_prompts=16", "--set", "ppo.advantage=grpo", "--set", "ppo.samples_per_prompt=4",
            "--set", "ppo.rollout_engine=vllm", "--set", f"ppo.vllm_url={url}", "--set", "run.progress=false",
        ])  # fmt: skip
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("sampler/trainer mismatch"))
    kl = float(line.split("at most ")[1].split(",")[0])  # the stand-in samples from the same weights
    assert kl < 1e-6 and "0.0% of tokens masked at most (ppo.is_mode=truncate, ppo.is_cap=2)" in line


def test_loop_refuses_ilql_with_the_engine_before_anything_runs(small_world, tmp_path):
    from rlhf.loop import rollout_engine

    _, world_dir = small_world
    root = tiny_root(world_dir, "loop.algorithm=ilql", "ppo.rollout_engine=vllm", "ppo.vllm_url=http://x:1")
    with pytest.raises(UserError, match="loop.algorithm=ilql with ppo.rollout_engine=vllm"):
        rollout_engine(root, tmp_path)


def test_eval_samples_policy_and_baseline_through_the_engine(small_world, tmp_path):
    from rlhf.cli import app as cli

    _, world_dir = small_world
    with standin_server(world_dir) as (url, app):
        args = ["eval", "--policy", str(world_dir), "--baseline", str(world_dir), "--n", "6",
                "--max-new-tokens", "8", "--vllm-url", url, "--json", str(tmp_path / "eval.json")]  # fmt: skip
        out = CliRunner().invoke(cli, args)
        calls = list(app.state.faults.calls)
    assert out.exit_code == 0, out.output
    assert (
        calls.count("/collective_rpc") == 2 and calls.count("/v1/completions") == 12
    )  # each model, each prompt
    figures = json.loads((tmp_path / "eval.json").read_text())
    # the same weights, the same seeds: the same samples, every prompt a tie, and no KL
    assert figures["ties"] == 1.0 and figures["kl_to_baseline"] == pytest.approx(0.0, abs=1e-6)
    bad = CliRunner().invoke(cli, [*args[:9], "--vllm-url", "localhost:8000"])
    assert "--vllm-url must be an http:// or https:// URL" in str(bad.exception)
