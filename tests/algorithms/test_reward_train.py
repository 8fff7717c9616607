"""Reward-model training end to end on tiny models: learning, rankings, heads, resume, guards, CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlhf.algorithms.reward import RewardConfig, train
from rlhf.config import RunConfig
from rlhf.io import read_jsonl, write_jsonl

FILLER = "the a cat sat on mat and then went home to sleep while it rained outside".split()


def hidden_rule_rows(n: int, seed: int) -> list[dict]:
    """TRL-format pairs from a hidden rule: the chosen answer says 'blue', the rejected one 'red'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):

        def answer(colour):
            words = rng.sample(FILLER, rng.randint(3, 8))
            words.insert(rng.randint(0, len(words)), colour)
            return " ".join(words)

        rows.append(
            {
                "prompt": f"User: question number {i}?\nAssistant:",
                "chosen": answer("blue"),
                "rejected": answer("red"),
            }
        )
    return rows


def quick_cfg(data, **overrides) -> RewardConfig:
    base = dict(
        data=str(data), epochs=4, batch_size=16, lr=3e-3, eval_every=0, gold_eval=False, max_length=64
    )
    base.update(overrides)
    return RewardConfig(**base)


RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rule") / "pairs.jsonl"
    write_jsonl(path, hidden_rule_rows(400, seed=1))
    return path


def test_learns_a_hidden_rule_from_trl_jsonl(rule_file, tiny_lm_dir, tmp_path):
    result = train(quick_cfg(rule_file, model=str(tiny_lm_dir)), RUN, tmp_path / "rm")
    assert result.metrics["eval/accuracy"] >= 0.95
    saved = json.loads((tmp_path / "rm" / "eval_metrics.json").read_text())
    assert saved["eval/accuracy"] == pytest.approx(result.metrics["eval/accuracy"])
    assert (tmp_path / "rm" / "rlhf_config.yaml").is_file()
    lines = read_jsonl(tmp_path / "rm" / "logs" / "metrics.jsonl")
    assert any("loss/bt" in line or any(k.startswith("loss/") for k in line) for line in lines)
    assert any("histogram/eval/margin" in line for line in lines)


def test_rankings_with_plackett_luce(tiny_lm_dir, tmp_path):
    rng = random.Random(0)
    rows = []
    for i in range(150):
        # K = 3 answers with 0, 1 or 2 'blue' words; more blue is better (ranking = indices, best first).
        counts = rng.sample([0, 1, 2], 3)
        responses = [" ".join(rng.sample(FILLER, 4) + ["blue"] * c) for c in counts]
        ranking = sorted(range(3), key=lambda k: -counts[k])
        rows.append({"prompt": f"User: rank {i}\nAssistant:", "responses": responses, "ranking": ranking})
    write_jsonl(tmp_path / "rank.jsonl", rows)
    result = train(quick_cfg(tmp_path / "rank.jsonl", model=str(tiny_lm_dir), epochs=6), RUN, tmp_path / "rm")
    assert result.metrics["eval/accuracy"] >= 0.85


def test_two_heads_from_objective_field(tiny_lm_dir, tmp_path):
    rows = hidden_rule_rows(200, seed=2)
    for i, row in enumerate(rows):
        row["objective"] = "helpful" if i % 2 else "harmless"
    write_jsonl(tmp_path / "two.jsonl", rows)
    result = train(quick_cfg(tmp_path / "two.jsonl", model=str(tiny_lm_dir), epochs=2), RUN, tmp_path / "rm")
    assert {"eval/accuracy/harmless", "eval/accuracy/helpful"} <= set(result.metrics)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "rm").id2label == {0: "harmless", 1: "helpful"}


def test_resume_matches_an_uninterrupted_run(rule_file, tiny_lm_dir, tmp_path):
    cfg = quick_cfg(
        rule_file, model=str(tiny_lm_dir), max_steps=6, eval_every=3, keep_best=False, ensemble_size=2
    )
    full = train(cfg, RUN, tmp_path / "full")
    stopped = train(RewardConfig(**{**cfg.__dict__, "stop_after_steps": 3}), RUN, tmp_path / "resumed")
    assert stopped.metrics == {"stopped_at_step": 3}
    assert not (tmp_path / "resumed" / "config.json").exists()  # no final model yet, only the checkpoint
    resumed = train(cfg, RUN, tmp_path / "resumed", resume=True)
    assert resumed.steps == full.steps == 6
    assert resumed.metrics["eval/loss"] == pytest.approx(full.metrics["eval/loss"], abs=1e-5)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "reward_heads.safetensors")["heads"]
    b = load_file(tmp_path / "resumed" / "reward_heads.safetensors")["heads"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_nan_loss_stops_and_keeps_previous_model(rule_file, tiny_lm_dir, tmp_path, monkeypatch):
    from rlhf.errors import NonFiniteError

    out = tmp_path / "rm"
    train(quick_cfg(rule_file, model=str(tiny_lm_dir), max_steps=2), RUN, out)
    before = (out / "reward_heads.safetensors").read_bytes()
    import rlhf.losses as losses

    real = losses.bradley_terry_loss

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(losses, "bradley_terry_loss", poisoned)
    with pytest.raises(NonFiniteError, match="reward-model loss is nan at step 0"):
        train(quick_cfg(rule_file, model=str(tiny_lm_dir), max_steps=2), RUN, out)
    assert (out / "reward_heads.safetensors").read_bytes() == before


def test_cli_train_eval_score_normalize(rule_file, tiny_lm_dir, tmp_path, capsys):
    from rlhf.cli import main

    def cli(*args):
        code = main([str(a) for a in args])
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()

    out = tmp_path / "rm"
    cli("reward", "train", "--data", rule_file, "--model", tiny_lm_dir, "--out", out,
        "--set", "reward.epochs=1", "--set", "run.progress=false", "--set", "run.device=cpu")  # fmt: skip
    samples = tmp_path / "samples.jsonl"
    write_jsonl(
        samples,
        [{"prompt": "User: hi\nAssistant:", "response": r} for r in ("blue sky", "red sky", "the cat")],
    )
    cli("reward", "score", "--model", out, "--data", samples, "--out", tmp_path / "scored.jsonl")
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["response"] for r in scored] == ["blue sky", "red sky", "the cat"]
    assert all(r["score"] == r["score_reward"] for r in scored)
    cli("reward", "normalize", "--model", out, "--samples", samples)
    cli("reward", "score", "--model", out, "--data", samples, "--out", tmp_path / "n.jsonl", "--normalize")
    normed = [r["score"] for r in read_jsonl(tmp_path / "n.jsonl")]
    assert sum(normed) == pytest.approx(0.0, abs=1e-4)  # the samples are their own reference set
    cli("reward", "eval", "--model", out, "--data", rule_file, "--json", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["eval/accuracy"] > 0.5


def test_cli_evaluates_a_datasetdict_on_its_test_split(tiny_lm_dir, tmp_path, capsys):
    import datasets

    from rlhf.cli import main

    # train: 40 pairs, test: 8 others; a DatasetDict as --eval-data is evaluated on "test", not "train"
    rows = hidden_rule_rows(48, seed=2)
    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:40]), "test": datasets.Dataset.from_list(rows[40:])}
    ).save_to_disk(dd)
    out = tmp_path / "rm"
    sets = ["reward.max_steps=1", "run.progress=false", "run.device=cpu", "run.tensorboard=false"]
    args = ["reward", "train", "--data", str(dd), "--eval-data", str(dd), "--model", str(tiny_lm_dir)]
    assert main([*args, "--out", str(out), *(a for s in sets for a in ("--set", s))]) == 0
    saved = json.loads((out / "eval_metrics.json").read_text())
    assert saved["eval_split"] == "test" and saved["eval/pairs"] == 8.0
    assert "eval_split" in capsys.readouterr().out
    assert (
        main(["reward", "eval", "--model", str(out), "--data", str(dd), "--json", str(tmp_path / "m.json")])
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["eval_split"] == "test"
    # an unknown split is one line naming the splits there are
    assert main(["reward", "eval", "--model", str(out), "--data", str(dd), "--split", "dev"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip().endswith("has no split 'dev'; it has: train, test") and len(err.strip().splitlines()) == 1
    )


def test_cli_bad_data_is_one_line(tiny_lm_dir, tmp_path, capsys):
    from rlhf.cli import main

    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a"}\n')
    code = main(
        [
            "reward",
            "train",
            "--data",
            str(tmp_path / "bad.jsonl"),
            "--model",
            str(tiny_lm_dir),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl line 1" in err and "rejected" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_accelerate_matches_one_process(rule_file, tiny_lm_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).parent / "accelerate"
    common = [
        "reward",
        "train",
        "--data",
        str(rule_file),
        "--model",
        str(tiny_lm_dir),
        "--set",
        "reward.epochs=4",
        "--set",
        "reward.lr=3e-3",
        "--set",
        "reward.batch_size=16",
        "--set",
        "run.progress=false",
        "--set",
        "run.device=cpu",
        "--set",
        "reward.gold_eval=false",
        "--set",
        "run.tensorboard=false",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "rlhf", *common, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    # --multi_gpu selects accelerate's torch.distributed launcher; on a CPU-only machine the processes
    # join a gloo group (MULTI_CPU).
    two = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "rlhf",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    m1 = json.loads((tmp_path / "one" / "eval_metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "eval_metrics.json").read_text())
    # each process sees half the batches per epoch (an odd last batch is dropped so the processes stay in step)
    assert m2["steps"] * 2 == pytest.approx(m1["steps"], rel=0.1)
    assert m1["eval/accuracy"] >= 0.9 and m2["eval/accuracy"] >= 0.9
    assert abs(m1["eval/accuracy"] - m2["eval/accuracy"]) <= 0.1

    # The learning-rate schedule follows the optimiser steps, however many processes: Accelerate's
    # prepared scheduler stepped once per process, so at 2 processes the cosine decay ended half-way.
    from transformers import get_scheduler

    for run, total in (("one", m1["steps"]), ("two", m2["steps"])):
        rows = [json.loads(x) for x in (tmp_path / run / "logs" / "metrics.jsonl").read_text().splitlines()]
        logged = {r["step"]: r["optim/lr"] for r in rows if "optim/lr" in r}
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
        schedule = get_scheduler("cosine", optimizer, int(0.05 * total), total)  # reward's defaults
        expected = {}
        for step in range(1, total + 1):
            optimizer.step()
            schedule.step()
            expected[step] = schedule.get_last_lr()[0]
        assert len(logged) >= 2
        for step, lr in logged.items():
            assert lr == pytest.approx(expected[step], rel=1e-6, abs=1e-12), (run, step, lr, expected[step])


def test_group_by_length_sorts_within_megabatches():
    from rlhf.training import group_by_length

    lengths = [5, 1, 4, 2, 9, 3, 8, 7]
    # batch 2, megabatch 2 -> chunks of 4 items: [5, 1, 4, 2] and [9, 3, 8, 7], each sorted by length
    assert group_by_length(lengths, 2, megabatch=2) == [1, 3, 2, 0, 5, 7, 6, 4]
    assert sorted(group_by_length(lengths, 3)) == list(range(8))  # a permutation


def test_full_ensemble_of_models(rule_file, tiny_lm_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf.reward_model import RewardModelEnsemble, load_reward_model, score_texts

    cfg = quick_cfg(rule_file, model=str(tiny_lm_dir), max_steps=4, ensemble_size=2, ensemble_kind="models")
    train(cfg, RUN, tmp_path / "rm")
    model, tokenizer = load_reward_model(tmp_path / "rm")
    assert isinstance(model, RewardModelEnsemble) and len(model.members) == 2
    scores = score_texts(model, tokenizer, ["User: hi\nAssistant: blue", "User: hi\nAssistant: red"])
    assert scores.mean.shape == (2, 1) and (scores.std > 0).all()  # two differently trained members
    # The top directory is member 0, loadable by plain transformers.
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").config.num_labels == 1


def test_bootstrap_weights():
    from rlhf.algorithms.reward import bootstrap_weights

    generator = torch.Generator().manual_seed(0)
    assert torch.equal(bootstrap_weights(3, 5, generator, enabled=False), torch.ones(3, 5))
    counts = bootstrap_weights(4, 20_000, generator, enabled=True)
    assert counts.shape == (4, 20_000)
    assert counts.mean().item() == pytest.approx(1.0, abs=0.02)  # Poisson(1): mean 1, variance 1
    assert counts.var().item() == pytest.approx(1.0, abs=0.05)


def test_bad_choices_name_the_key_and_the_allowed_values():
    from rlhf.algorithms.reward import RewardConfig, objective_index
    from rlhf.config import ConfigError
    from rlhf.errors import UserError

    with pytest.raises(
        ConfigError, match=r"reward.lr_schedule must be one of cosine, linear, constant; got 'step'"
    ):
        RewardConfig(lr_schedule="step").validate()
    with pytest.raises(
        UserError,
        match=r"objective 'honest' is not one of the model's heads \(helpful, harmless\): train a head on it \(--set 'reward.objectives=\[helpful, harmless, honest\]'\)",
    ):
        objective_index(["helpful", "harmless"], "honest", "pairs.jsonl line 3")
