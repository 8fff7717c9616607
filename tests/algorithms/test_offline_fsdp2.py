"""The offline trainers (reward model, DPO, ILQL) under `accelerate launch` with the shipped FSDP2 config
at 2 CPU processes: each process holds half of the parameters (rlhf.parallel shards where Accelerate would
only replicate), the run equals the DDP run, the output loads in plain transformers, and a run stopped as
if killed continues with --resume to the same result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.io import write_jsonl
from tests import launch
from tests.algorithms.test_reward_train import hidden_rule_rows


def launch_two(config: str, command: list[str], out: Path, sets: list[str], *extra: str) -> str:
    """`accelerate launch ... -m rlhf COMMAND --out OUT EXTRA --set ...` with 2 CPU processes."""
    return launch.launch_two(config, [*command, "--out", str(out), *extra], sets)


def training_rows(out: Path) -> list[dict]:
    """The logged training rows (those with the parameter counts), main process only."""
    from rlhf.metrics import read_metrics

    return [r for r in read_metrics(out / "logs") if "parallel/parameters" in r]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fsdp2_pairs") / "pairs.jsonl"
    write_jsonl(path, hidden_rule_rows(200, seed=1))
    return path


# (command, settings, the logged loss, the setting that stops early): 12 optimiser steps each
TRAINERS = {
    "reward": (["reward", "train"], ["reward.epochs=2", "reward.lr=3e-3", "reward.batch_size=16",
                                     "reward.gold_eval=false"], "loss/bt", "reward.stop_after_steps"),
    "dpo": (["dpo", "train"], ["dpo.epochs=1", "dpo.batch_size=8", "dpo.lr=1e-3"], "loss/dpo",
            "dpo.stop_after_steps"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_fsdp2_shards_matches_ddp_and_resumes(trainer, pairs_file, tiny_lm_dir, tmp_path):
    command, sets, loss, stop = TRAINERS[trainer]
    args = [*command, "--data", str(pairs_file), "--model", str(tiny_lm_dir)]
    ddp, fsdp2 = tmp_path / "ddp", tmp_path / "fsdp2"
    launch_two("ddp", args, ddp, sets)
    # FSDP2: stopped after 5 steps as if killed (a checkpoint, no model), then --resume to the end
    stopped = launch_two("fsdp2", args, fsdp2, [*sets, f"{stop}=5"])
    assert "stopped at step 5" in stopped and not (fsdp2 / "model.safetensors").exists()
    launch_two("fsdp2", args, fsdp2, sets, "--resume")
    runs = {"ddp": training_rows(ddp), "fsdp2": training_rows(fsdp2)}
    # what each process holds: everything under DDP, its half (of every tensor's rows) under FSDP2
    for config, share in (("ddp", 1.0), ("fsdp2", 0.5)):
        row = runs[config][-1]
        assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(share, abs=0.01)
    # the same batches and the same averaged gradients, interrupted or not: the same losses to float
    # rounding (measured: 1e-7 relative; tolerance 1e-4). Rows are logged at steps 10 and 12: both after
    # the resume, so they check it too
    assert [r["step"] for r in runs["fsdp2"]] == [r["step"] for r in runs["ddp"]]
    for a, b in zip(runs["ddp"], runs["fsdp2"], strict=True):
        assert b[loss] == pytest.approx(a[loss], rel=1e-4, abs=1e-6), (a["step"], a[loss], b[loss])
    # the output: plain transformers (and rlhf's reward model), trained, equal to the DDP run's
    if trainer == "reward":
        from transformers import AutoModelForSequenceClassification

        from rlhf.reward_model import load_reward_model

        load_reward_model(fsdp2)
        loaded = [AutoModelForSequenceClassification.from_pretrained(p) for p in (ddp, fsdp2)]
        metrics = [json.loads((p / "eval_metrics.json").read_text()) for p in (ddp, fsdp2)]
        assert metrics[1]["eval/accuracy"] == metrics[0]["eval/accuracy"] >= 0.9
    else:
        from transformers import AutoModelForCausalLM

        loaded = [AutoModelForCausalLM.from_pretrained(p) for p in (ddp, fsdp2, tiny_lm_dir)]
        assert any(not torch.equal(w, loaded[2].state_dict()[k]) for k, w in loaded[1].state_dict().items())
    a, b = (m.state_dict() for m in loaded[:2])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fsdp2_main_process_holds_a_share_and_gradients_sync_once_per_step(pairs_file, tiny_lm_dir, tmp_path):
    """DPO with 2 batches per optimiser step under FSDP2, measured inside each process
    (tests/algorithms/fsdp2_probe.py): the main process holds its share of the parameters as the other
    does (no whole copy to evaluate and save from), the gradients are reduce-scattered once per step
    (every unit: the 2 blocks and the root), and the run still equals DDP's."""
    from transformers import AutoModelForCausalLM

    args = ["dpo", "train", "--data", str(pairs_file), "--model", str(tiny_lm_dir)]
    sets = ["dpo.epochs=1", "dpo.batch_size=8", "dpo.lr=1e-3", "dpo.grad_accum=2"]
    ddp, fsdp2 = tmp_path / "ddp", tmp_path / "fsdp2"
    launch_two("ddp", args, ddp, sets)
    fsdp2.mkdir()
    probe = ("tests.algorithms.fsdp2_probe", str(fsdp2), "rlhf.algorithms.dpo:batch_loss", "--")
    launch.launch_two("fsdp2", [*args, "--out", str(fsdp2)], sets, module=probe)
    held = [json.loads((fsdp2 / f"probe_{rank}.json").read_text()) for rank in (0, 1)]
    loaded = [AutoModelForCausalLM.from_pretrained(p) for p in (ddp, fsdp2)]
    whole_bytes = sum(p.nbytes for p in loaded[0].parameters())  # tied weights once
    steps = training_rows(fsdp2)[-1]["step"]
    units = loaded[0].config.num_hidden_layers + 1
    # before: the main process kept a whole copy (and both the parameters sharding replaced): 2.5x and
    # 1.5x a whole model; 2 x units reduce-scatters per step (one per batch)
    for rank in (0, 1):
        assert held[rank]["max_parameter_bytes"] <= 0.55 * whole_bytes, (rank, held[rank], whole_bytes)
        assert held[rank]["reduce_scatters"] == units * steps, (rank, held[rank], units, steps)
    assert held[0]["max_parameter_bytes"] == pytest.approx(held[1]["max_parameter_bytes"], rel=0.02)
    # the same run as DDP's: last logged loss, evaluation (run sharded on both processes), weights
    a, b = training_rows(ddp)[-1], training_rows(fsdp2)[-1]
    assert (a["step"], b["loss/dpo"]) == (steps, pytest.approx(a["loss/dpo"], rel=1e-4, abs=1e-6))
    metrics = [json.loads((p / "eval_metrics.json").read_text()) for p in (ddp, fsdp2)]
    for key in ("eval/loss", "eval/accuracy", "eval/margin"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-6), key
    a, b = (m.state_dict() for m in loaded)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ilql_shards_under_fsdp2(pairs_file, tiny_lm_dir, tmp_path):
    from rlhf.algorithms.ilql import load_ilql

    sets = ["ilql.reward=tests.algorithms.test_ppo:brevity", "ilql.epochs=1", "ilql.batch_size=16"]
    args = ["ilql", "train", "--data", str(pairs_file), "--model", str(tiny_lm_dir)]
    launch_two("fsdp2", args, tmp_path / "ilql", sets)
    row = training_rows(tmp_path / "ilql")[-1]
    assert row["parallel/local_parameters"] / row["parallel/parameters"] == pytest.approx(0.5, abs=0.01)
    load_ilql(tmp_path / "ilql", device="cpu")  # the LM in plain transformers, the heads beside it


def test_the_multinode_config_joins_the_machines_into_one_group(pairs_file, tiny_lm_dir, tmp_path):
    """configs/accelerate/fsdp2_multinode.yaml as its comment says: the same line on each machine with its
    --machine_rank. Two "machines" on this one (one process each): one group, half the parameters each."""
    port = launch.free_port()
    accelerate = Path(sys.executable).parent / "accelerate"
    sets = ["reward.epochs=1", "reward.batch_size=16", "reward.gold_eval=false", *launch.CPU_RUN]
    out = tmp_path / "out"

    def machine(rank: int) -> subprocess.Popen:
        return subprocess.Popen(
            [str(accelerate), "launch", "--config_file", str(launch.CONFIGS / "fsdp2_multinode.yaml"),
             "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
             "-m", "rlhf", "reward", "train", "--data", str(pairs_file), "--model", str(tiny_lm_dir),
             "--out", str(out), *[arg for s in sets for arg in ("--set", s)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    launches = [machine(1), machine(0)]
    results = [p.communicate(timeout=300) for p in launches]
    assert all(p.returncode == 0 for p in launches), [err[-2000:] for _, err in results]
    last = training_rows(out)[-1]
    assert last["parallel/local_parameters"] == pytest.approx(last["parallel/parameters"] / 2, rel=0.01)
    assert json.loads((out / "eval_metrics.json").read_text())["steps"] == last["step"]
