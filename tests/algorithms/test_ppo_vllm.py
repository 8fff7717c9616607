"""PPO / GRPO with rollouts sampled by a vLLM server (here the loopback stand-in, sampling from the same
policy with our own loop): it learns as our sampler does, the server follows every update, the
sampler/trainer mismatch is measured and corrected, and a server that is not there stops the run first."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.algorithms.ppo import PPOConfig, train
from rlhf.config import ConfigError, RunConfig, validate_all
from rlhf.errors import UserError
from tests.vllm_standin import Faults, free_port, standin_server

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def grpo(world_dir, **overrides) -> PPOConfig:
    """test_ppo.py's GRPO run that learns to open with 'Sure'."""
    base = dict(
        policy=str(world_dir), reward="tests.algorithms.test_ppo:says_sure", n_world_prompts=64, advantage="grpo",
        samples_per_prompt=4, steps=10, batch_size=16, mini_batch_size=8, lr=3e-3, max_new_tokens=16, kl_coef=0.01,
        missing_eos_penalty=0.0,
    )  # fmt: skip
    return PPOConfig(**{**base, **overrides})


def test_grpo_with_vllm_rollouts_learns_like_our_sampler(small_world, tmp_path):
    _, world_dir = small_world
    with standin_server(world_dir) as (url, app):
        result = train(grpo(world_dir, rollout_engine="vllm", vllm_url=url), RUN, tmp_path / "vllm",
                       show_progress=False)  # fmt: skip
        served = app.state.engine.models["standin"].state_dict()
    ours = train(grpo(world_dir), RUN, tmp_path / "ours", show_progress=False)
    for run in (result, ours):  # the same learning, the bar of test_ppo.py's GRPO test
        scores = [h["objective/scores"] for h in run.history]
        assert sum(scores[:2]) / 2 < 0.3 and sum(scores[-3:]) / 3 > 0.6, scores
    for h in result.history:  # the stand-in samples from the trainer's own weights: no mismatch
        assert h["mismatch/kl"] < 1e-6 and h["mismatch/over_cap_fraction"] == 0.0
        assert h["mismatch/weight_mean"] == pytest.approx(1.0, abs=1e-4) and h["time/weight_sync_s"] > 0
    assert "mismatch/kl" not in ours.history[0]
    # the server holds the final policy: synced after the last update
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "vllm").state_dict()
    assert all(torch.allclose(served[k], final[k]) for k in final)


@pytest.mark.parametrize("mode, weight_mean, masked", [("truncate", 2.0, 0.0), ("mask", 0.0, 1.0)])
def test_a_sampler_that_disagrees_is_measured_and_corrected(small_world, tmp_path, mode, weight_mean, masked):
    # The server reports every log-prob lower by log 3: every token's ratio pi_trainer / pi_sampler is 3,
    # above the cap 2. Truncated, every weight is 2; masked, every token is dropped (weight 0).
    # KL(sampler || trainer) per token by k3 with r = 3: 3 - 1 - ln 3 = 0.901388.
    _, world_dir = small_world
    faults = Faults(logprob_offset=math.log(3))
    with standin_server(world_dir, faults=faults) as (url, _):
        cfg = grpo(world_dir, rollout_engine="vllm", vllm_url=url, steps=1, is_mode=mode, is_cap=2.0)
        result = train(cfg, RUN, tmp_path / mode, show_progress=False)
    stats = result.history[0]
    assert stats["mismatch/kl"] == pytest.approx(2 - math.log(3), abs=1e-4)
    assert stats["mismatch/kl_k1"] == pytest.approx(-math.log(3), abs=1e-4)
    assert stats["mismatch/over_cap_fraction"] == 1.0
    assert stats["mismatch/weight_mean"] == pytest.approx(weight_mean, abs=1e-4)
    assert stats["mismatch/masked_fraction"] == masked
    if mode == "mask":  # every token dropped: the policy gradient is 0, the loss only the KL term
        assert stats["loss/policy"] == pytest.approx(0.0, abs=1e-7)


def test_lora_policy_syncs_its_adapter(small_world, tmp_path):
    _, world_dir = small_world
    with standin_server(world_dir) as (url, app):
        cfg = grpo(world_dir, rollout_engine="vllm", vllm_url=url, steps=2, lora_r=4, lr=1e-2)
        result = train(cfg, RUN, tmp_path / "lora", show_progress=False)
        assert "rlhf-policy" in app.state.engine.models
        assert "/v1/load_lora_adapter" in app.state.faults.calls
        assert "/collective_rpc" not in app.state.faults.calls  # the base weights never move
    for h in result.history:  # sampled from base + adapter, exactly the trainer's policy
        assert h["mismatch/kl"] < 1e-6


def test_no_server_stops_the_run_before_training(small_world, tmp_path):
    _, world_dir = small_world
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=rf"vLLM server {url}: cannot connect for the health check"):
        train(grpo(world_dir, rollout_engine="vllm", vllm_url=url), RUN, tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x" / "logs").exists()


def test_engine_settings_are_checked():
    with pytest.raises(ConfigError, match="ppo.rollout_engine=vllm needs ppo.vllm_url"):
        validate_all(PPOConfig(rollout_engine="vllm"))
    with pytest.raises(ConfigError, match="ppo.rollout_engine must be ours or vllm; got 'sglang'"):
        validate_all(PPOConfig(rollout_engine="sglang"))
    with pytest.raises(ConfigError, match="ppo.is_mode must be truncate, mask or off"):
        validate_all(PPOConfig(is_mode="clip"))
    with pytest.raises(ConfigError, match="ppo.is_cap must be > 1"):
        validate_all(PPOConfig(is_cap=1.0))


def test_resume_with_vllm_rollouts_gives_the_uninterrupted_runs_step(small_world, tmp_path):
    # the request seeds come from the trainer's random stream (checkpointed), and a resumed run syncs
    # the server to its weights before its first rollout: the same rollouts, the same step
    _, world_dir = small_world
    with standin_server(world_dir) as (url, _):
        cfg = dict(
            rollout_engine="vllm", vllm_url=url, steps=3, batch_size=8, mini_batch_size=4, max_new_tokens=8
        )
        full = train(grpo(world_dir, **cfg), RUN, tmp_path / "full", show_progress=False)
        train(grpo(world_dir, **cfg, stop_after_steps=2), RUN, tmp_path / "resumed", show_progress=False)
        resumed = train(grpo(world_dir, **cfg), RUN, tmp_path / "resumed", show_progress=False, resume=True)
    for key in ("objective/scores", "objective/kl", "loss/policy", "response/length"):
        assert resumed.history[2][key] == pytest.approx(full.history[2][key], rel=1e-4, abs=1e-6), key
