"""The trainers under `accelerate launch` with the shipped DeepSpeed configs (ZeRO-2, ZeRO-3) at 2 CPU
processes (DeepSpeed's CPU accelerator, gloo): ZeRO-3 holds half the parameters per process, the losses
equal the DDP run's, the output loads in plain transformers, and a run stopped as if killed continues
with --resume to the uninterrupted run's result. The end-to-end tests need `deepspeed` installed (the
`dev` extra); the checks of the configs and of the refusals do not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhf.errors import UserError
from rlhf.io import write_jsonl
from tests import launch
from tests.algorithms.test_offline_fsdp2 import TRAINERS, training_rows
from tests.algorithms.test_ppo import assert_plain_transformers, logged
from tests.algorithms.test_reward_train import hidden_rule_rows

needs_deepspeed = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("deepspeed"),
    reason="deepspeed is not installed (pip install -e '.[dev]' installs it)",
)


@pytest.mark.parametrize(
    ("config", "stage", "optimizer_to", "params_to"),
    [("zero2", 2, "none", "none"), ("zero2_offload", 2, "cpu", "none"),
     ("zero3", 3, "none", "none"), ("zero3_offload", 3, "cpu", "cpu")],
)  # fmt: skip
def test_the_shipped_deepspeed_configs_say_what_their_names_do(config, stage, optimizer_to, params_to):
    """Accelerate's own loader reads each file as a DeepSpeed launch of the named stage and offload, and
    none sets what rlhf writes into DeepSpeed's config from its own settings (rlhf.parallel.prepare)."""
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(launch.CONFIGS / f"{config}.yaml"))
    from accelerate.utils import DistributedType

    assert loaded.distributed_type == DistributedType.DEEPSPEED and loaded.mixed_precision == "no"
    ds = loaded.deepspeed_config
    assert ds["zero_stage"] == stage
    assert ds["offload_optimizer_device"] == optimizer_to and ds["offload_param_device"] == params_to
    assert not {"gradient_accumulation_steps", "gradient_clipping", "deepspeed_config_file"} & ds.keys()
    assert ds["zero3_init_flag"] is False  # rlhf loads whole models and partitions the trained one


def test_a_deepspeed_launch_with_an_accelerator_that_ignores_it_is_refused(monkeypatch):
    from accelerate.utils import DistributedType

    from rlhf import parallel

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2, is_fsdp2=False)
    with pytest.raises(UserError, match="make_accelerator"):
        parallel.shards(ddp)
    assert parallel.deepspeed_stage(ddp) == 0


def test_the_torch_optimizer_is_found_inside_the_wrappers():
    from rlhf import parallel

    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    # Accelerate's wrapper and DeepSpeed's ZeRO optimiser each keep the one inside as .optimizer
    assert parallel.torch_optimizer(SimpleNamespace(optimizer=SimpleNamespace(optimizer=adam))) is adam
    assert parallel.torch_optimizer(adam) is adam


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zero_pairs") / "pairs.jsonl"
    write_jsonl(path, hidden_rule_rows(200, seed=1))
    return path


def launch_two(config: str, command: list[str], out: Path, sets: list[str], *extra: str) -> str:
    return launch.launch_two(config, [*command, "--out", str(out), *extra], sets, timeout=600)


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_offline_trainers_under_zero2_and_zero3_match_ddp_and_resume(
    trainer, pairs_file, tiny_lm_dir, tmp_path
):
    command, sets, loss, stop = TRAINERS[trainer]
    args = [*command, "--data", str(pairs_file), "--model", str(tiny_lm_dir)]
    outs = {config: tmp_path / config for config in ("ddp", "zero2", "zero3")}
    launch_two("ddp", args, outs["ddp"], sets)
    launch_two("zero2", args, outs["zero2"], sets)
    # ZeRO-3 stopped after 5 of 12 steps as if killed: a checkpoint with DeepSpeed's partitions, no model
    stopped = launch_two("zero3", args, outs["zero3"], [*sets, f"{stop}=5"])
    checkpoint = outs["zero3"] / "checkpoint" / ("last" if trainer == "reward" else "")
    assert "stopped at step 5" in stopped and not (outs["zero3"] / "model.safetensors").exists()
    assert len(list((checkpoint / "deepspeed" / "state").glob("*optim_states.pt"))) == 2  # one per process
    launch_two("zero3", args, outs["zero3"], sets, "--resume")
    runs = {config: training_rows(out) for config, out in outs.items()}
    # what each process holds: everything under DDP and ZeRO-2 (gradients and Adam are split, not
    # parameters), its half under ZeRO-3
    for config, share in (("ddp", 1.0), ("zero2", 1.0), ("zero3", 0.5)):
        row = runs[config][-1]
        assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(share, abs=0.01)
    # the same batches and averaged gradients, the same clipping: the same losses to float rounding
    # (measured: about 1e-6 relative; tolerance 1e-4). Rows at step 10 and the last (11 or 12): after the
    # resume
    for config in ("zero2", "zero3"):
        assert [r["step"] for r in runs[config]] == [r["step"] for r in runs["ddp"]]
        assert runs[config][0]["step"] == 10
        for a, b in zip(runs["ddp"], runs[config], strict=True):
            assert b[loss] == pytest.approx(a[loss], rel=1e-4, abs=1e-6), (
                config,
                a["step"],
                a[loss],
                b[loss],
            )
    # the output: plain transformers, equal to the DDP run's
    if trainer == "reward":
        from transformers import AutoModelForSequenceClassification as Auto

        from rlhf.reward_model import load_reward_model

        load_reward_model(outs["zero3"])
        metrics = [json.loads((out / "eval_metrics.json").read_text()) for out in outs.values()]
        assert (
            metrics[0]["eval/accuracy"] == metrics[1]["eval/accuracy"] == metrics[2]["eval/accuracy"] >= 0.9
        )
    else:
        from transformers import AutoModelForCausalLM as Auto
    weights = [Auto.from_pretrained(out).state_dict() for out in outs.values()]
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        for key in other:
            torch.testing.assert_close(other[key], weights[0][key], rtol=1e-4, atol=1e-5)


@needs_deepspeed
@pytest.mark.slow
def test_ppo_under_zero2_and_zero3_matches_ddp_and_resumes(tiny_lm_dir, tmp_path):
    # PPO with a value head and a KL term on a random-weight Llama: 2 processes x 4 responses, 4 iterations
    sets = ["ppo.steps=4", "ppo.save_every=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.max_new_tokens=6",
            "ppo.kl_coef=0.05"]  # fmt: skip
    args = ["--policy", str(tiny_lm_dir), "--reward", "tests.algorithms.test_ppo:brevity"]
    outs = {config: tmp_path / config for config in ("ddp", "zero2", "zero3")}
    for config in ("ddp", "zero2"):
        launch.launch_two(config, ["ppo", "train", "--out", str(outs[config]), *args], sets, timeout=600)
    # ZeRO-3 stopped after 2 iterations as if killed, then resumed: the rollout gathers the policy once
    ppo = ["ppo", "train", "--out", str(outs["zero3"]), *args]
    launch.launch_two("zero3", ppo, [*sets, "ppo.stop_after_steps=2"], timeout=600)
    assert (outs["zero3"] / "checkpoint" / "deepspeed").is_dir() and not (
        outs["zero3"] / "model.safetensors"
    ).exists()
    launch.launch_two("zero3", [*ppo, "--resume"], sets, timeout=600)
    runs = {config: logged(out) for config, out in outs.items()}
    for config, share in (("ddp", 1.0), ("zero2", 1.0), ("zero3", 0.5)):
        row = runs[config][-1]
        assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(share, abs=0.01)
    # the same samples and averaged gradients (policy and head clipped as one group, as DeepSpeed does):
    # the same run to float rounding (measured: 1e-6 relative)
    for config in ("zero2", "zero3"):
        assert [r["step"] for r in runs[config]] == [0, 1, 2, 3]
        for a, b in zip(runs["ddp"], runs[config], strict=True):
            for key in ("objective/scores", "objective/kl", "loss/policy", "loss/value"):
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (config, a["step"], key)
    for out in outs.values():
        assert_plain_transformers(out, tiny_lm_dir)
        assert (out / "value_head.pt").is_file()
