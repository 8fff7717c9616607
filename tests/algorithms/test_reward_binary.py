"""Reward models from binary (thumbs up/down) labels: the loss by hand, binary-only and mixed training,
the learned threshold b saved and restored, the CLI."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlhf.algorithms.reward import RewardConfig, evaluate_file, train
from rlhf.config import RunConfig
from rlhf.io import write_jsonl
from rlhf.losses import binary_logistic_loss
from tests.algorithms.test_reward_train import FILLER, hidden_rule_rows

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def test_binary_logistic_loss_by_hand():
    # r - b = (2, -1, 0.5), labels (up, up, down): s (r - b) = (2, -1, -0.5)
    #   -log sigmoid(2) = log(1 + e^-2) = 0.126928, -log sigmoid(-1) = log(1 + e) = 1.313262,
    #   -log sigmoid(-0.5) = log(1 + e^0.5) = 0.974077; mean 0.804756
    scores = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    loss, stats = binary_logistic_loss(scores, torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(
        (math.log1p(math.exp(-2)) + math.log1p(math.e) + math.log1p(math.exp(0.5))) / 3
    )
    assert loss.item() == pytest.approx(0.804756, abs=1e-6)
    # only the first has the sign of its label; desirable mean (2 - 1) / 2, undesirable 0.5
    assert stats["reward/binary_accuracy"] == pytest.approx(1 / 3)
    assert (stats["reward/desirable"], stats["reward/undesirable"]) == (0.5, 0.5)
    # at r = b: log 2 whatever the label; weights (3, 1): the weighted mean of (0.126928, 1.313262)
    assert binary_logistic_loss(torch.zeros(2), torch.tensor([True, False]))[0].item() == pytest.approx(
        math.log(2)
    )
    weighted, _ = binary_logistic_loss(scores[:2], torch.tensor([True, True]), torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * 0.126928 + 1.313262) / 4, abs=1e-6)


def binary_rows(n: int, seed: int) -> list[dict]:
    """One answer per prompt, thumbs up when it says 'blue', down when it says 'red' (the hidden rule of
    the pairwise tests, as single judgements)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.5
        words = rng.sample(FILLER, rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), "blue" if good else "red")
        rows.append(
            {
                "prompt": f"User: question number {i}?\nAssistant:",
                "completion": " ".join(words),
                "label": good,
            }
        )
    return rows


def cfg(data, model, **overrides) -> RewardConfig:
    base = dict(data=str(data), model=str(model), epochs=4, batch_size=16, lr=3e-3, eval_every=0,
                gold_eval=False, max_length=64)  # fmt: skip
    return RewardConfig(**{**base, **overrides})


def test_binary_labels_alone_rank_good_above_bad_on_held_out_pairs(tiny_lm_dir, tmp_path):
    from rlhf.reward_model import load_reward_model

    write_jsonl(tmp_path / "binary.jsonl", binary_rows(400, seed=1))
    result = train(cfg(tmp_path / "binary.jsonl", tiny_lm_dir), RUN, tmp_path / "rm")
    assert result.metrics["eval/binary_accuracy"] >= 0.9, result.metrics
    # new prompts, compared in pairs the model never saw a comparison of: blue above red
    write_jsonl(tmp_path / "pairs.jsonl", hidden_rule_rows(200, seed=7))
    held_out = evaluate_file(str(tmp_path / "rm"), str(tmp_path / "pairs.jsonl"), device="cpu", max_length=64)
    assert held_out["eval/accuracy"] >= 0.9, held_out
    # the threshold b was learnt (saved with the heads) and the scores sit on both sides of it
    model, _ = load_reward_model(tmp_path / "rm")
    assert model.offsets.abs().item() > 0


def test_pairs_and_binary_labels_in_one_file(tiny_lm_dir, tmp_path):
    rows = hidden_rule_rows(200, seed=1) + binary_rows(200, seed=2)
    random.Random(0).shuffle(rows)
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = train(cfg(tmp_path / "mixed.jsonl", tiny_lm_dir), RUN, tmp_path / "rm")
    m = result.metrics
    assert m["eval/accuracy"] >= 0.9 and m["eval/binary_accuracy"] >= 0.85, m
    assert m["eval/pairs"] > 0 and m["eval/binary_examples"] > 0


def test_comparisons_only_leave_b_at_zero_and_scores_as_plain_transformers(tiny_lm_dir, tmp_path):
    from safetensors.torch import load_file

    write_jsonl(tmp_path / "pairs.jsonl", hidden_rule_rows(64, seed=1))
    train(cfg(tmp_path / "pairs.jsonl", tiny_lm_dir, max_steps=3), RUN, tmp_path / "rm")
    saved = load_file(tmp_path / "rm" / "reward_heads.safetensors")
    assert saved["offsets"].shape == (1, 1) and saved["offsets"].abs().sum().item() == 0.0


def test_cli_trains_and_evaluates_binary_files(tiny_lm_dir, tmp_path, capsys):
    from rlhf.cli import main

    write_jsonl(tmp_path / "binary.jsonl", binary_rows(64, seed=3))
    write_jsonl(tmp_path / "held_out.jsonl", binary_rows(32, seed=4))
    sets = ["reward.max_steps=3", "reward.batch_size=8", "reward.gold_eval=false", "run.progress=false",
            "run.device=cpu", "run.tensorboard=false"]  # fmt: skip
    args = ["reward", "train", "--model", str(tiny_lm_dir), "--data", str(tmp_path / "binary.jsonl")]
    assert main([*args, "--out", str(tmp_path / "rm"), *[a for s in sets for a in ("--set", s)]]) == 0
    assert "eval/binary_accuracy" in capsys.readouterr().out
    assert main(["reward", "eval", "--model", str(tmp_path / "rm"), "--data", str(tmp_path / "held_out.jsonl"),
                 "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "eval/binary_accuracy" in out and "eval/binary_examples" in out
