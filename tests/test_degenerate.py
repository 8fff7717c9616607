"""Degenerate batches: one prompt, one-token and empty responses, all-equal rewards, a batch of one after
the split, batch sizes larger than the data. Each gives finite numbers or one `UserError` line."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.algorithms import dpo, ilql, ppo, reward
from rlhf.cli import main
from rlhf.config import ConfigError, RunConfig
from rlhf.io import write_jsonl
from rlhf.metrics import read_metrics
from rlhf.rl_math import grpo_advantages, masked_whiten, rloo_advantages

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)
QUIET = ["--set", "run.device=cpu", "--set", "run.progress=false", "--set", "run.tensorboard=false"]


def constant(prompts, responses):
    """The same reward for every response: no response is better than another."""
    return [0.5] * len(responses)


def finite(stats: dict) -> dict:
    """The non-finite entries of a stats dict (expected: none)."""
    return {k: v for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)}


def one_line_error(capsys, args) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# ---------------------------------------------------------------- the maths


def test_whiten_one_valid_position_is_zero_not_an_error():
    # one response of one token: no spread to whiten by; the variance counts as 0, so (x - x) = 0,
    # or x itself when only the scale changes (shift_mean=False). Before: ValueError from masked_var.
    x, mask = torch.tensor([[5.0, 7.0]]), torch.tensor([[1, 0]])
    assert masked_whiten(x, mask).tolist() == [[0.0, 0.0]]
    assert masked_whiten(x, mask, shift_mean=False).tolist() == [[5.0, 0.0]]


def test_all_equal_scores_give_advantages_exactly_zero():
    # three float32 scores of 0.1 - 1.0 (a reward of 0.1 less the missing-EOS penalty): their float32
    # mean is 6e-8 off, and GRPO's division by their std (7e-8) + 1e-4 used to give -0.0006 each
    penalised = (torch.tensor(0.1) - torch.tensor(1.0)).repeat(3)  # (3,) float32
    adv, stats = grpo_advantages(penalised, k=3)
    assert adv.tolist() == [0.0, 0.0, 0.0]
    assert (stats["scores/zero_std_frac"], stats["scores/group_std"]) == (1.0, 0.0)
    adv, stats = rloo_advantages(penalised, k=3)  # was -6e-8 each, then whitened up to ~1e-4
    assert adv.tolist() == [0.0, 0.0, 0.0] and stats["scores/zero_std_frac"] == 1.0
    # a mixed batch: the equal group is 0, the other (1, 2, 3) is (-1, 0, 1) / (sample std 1 + 1e-4)
    adv, stats = grpo_advantages(torch.cat([penalised, torch.tensor([1.0, 2.0, 3.0])]), k=3)
    torch.testing.assert_close(adv, torch.tensor([0.0, 0.0, 0.0, -1.0, 0.0, 1.0]) / 1.0001)
    assert stats["scores/zero_std_frac"] == 0.5


# ---------------------------------------------------------------- PPO, RLOO, GRPO


@pytest.fixture
def one_prompt(tmp_path):
    path = tmp_path / "one_prompt.jsonl"
    write_jsonl(path, [{"prompt": "User: what is tea?\nAssistant:"}])
    return path


def ppo_cfg(policy, prompts, **overrides) -> ppo.PPOConfig:
    base = dict(policy=str(policy), reward="tests.test_degenerate:constant", prompts=str(prompts), steps=1,
                batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, missing_eos_penalty=0.0)  # fmt: skip
    return ppo.PPOConfig(**{**base, **overrides})


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_group_estimators_on_one_prompt_with_equal_rewards(tiny_lm_dir, one_prompt, tmp_path, advantage):
    cfg = ppo_cfg(tiny_lm_dir, one_prompt, advantage=advantage, samples_per_prompt=2)
    (stats,) = ppo.train(cfg, RUN, tmp_path / "p", show_progress=False).history
    assert finite(stats) == {}
    # every score is 0.5, so every advantage is exactly 0 and so is the clipped policy loss
    assert stats["objective/scores"] == 0.5 and stats["scores/zero_std_frac"] == 1.0
    assert (stats["advantages/mean"], stats["advantages/std"], stats["loss/policy"]) == (0.0, 0.0, 0.0)


def test_ppo_with_equal_rewards_updates_finitely(tiny_lm_dir, one_prompt, tmp_path):
    # one prompt sampled twice, constant score: GAE still has the value head's error to learn from
    history = ppo.train(ppo_cfg(tiny_lm_dir, one_prompt, samples_per_prompt=2, steps=2), RUN, tmp_path / "p",
                        show_progress=False).history  # fmt: skip
    assert [finite(stats) for stats in history] == [{}, {}]
    assert [stats["objective/scores"] for stats in history] == [0.5, 0.5]


def test_cli_ppo_batch_of_one_one_token_response(tiny_lm_dir, one_prompt, tmp_path, capsys):
    # one prompt, one response of one token: whitening had a single value (before: ValueError,
    # "masked_var needs at least 2 valid positions, got 1", as a traceback)
    code = main(["ppo", "train", "--policy", str(tiny_lm_dir), "--reward", "tests.test_degenerate:constant",
                 "--prompts", str(one_prompt), "--out", str(tmp_path / "p"), "--set", "ppo.steps=1",
                 "--set", "ppo.batch_size=1", "--set", "ppo.mini_batch_size=1", "--set", "ppo.max_new_tokens=1",
                 *QUIET])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (logged,) = read_metrics(tmp_path / "p" / "logs" / "metrics.jsonl")
    # the one advantage whitens to 0: no policy gradient; explained variance is undefined (1 token)
    assert logged["loss/policy"] == 0.0 and math.isfinite(logged["loss/value"])
    assert logged["response/length"] == 1.0


def test_ppo_config_and_data_mistakes_through_the_api(tiny_lm_dir, one_prompt, tmp_path):
    # the API checks the config as the CLI does (before: ValueError from rl_math._groups)
    cfg = ppo_cfg(tiny_lm_dir, one_prompt, advantage="grpo", batch_size=1, mini_batch_size=1)
    with pytest.raises(ConfigError, match=r"ppo.advantage=grpo needs ppo.samples_per_prompt >= 2"):
        ppo.train(cfg, RUN, tmp_path / "p", show_progress=False)
    # fewer prompts than a batch are cycled (tests/algorithms/test_ppo.py::test_a_small_prompt_file_is_cycled)
    assert ppo.train(ppo_cfg(tiny_lm_dir, one_prompt), RUN, tmp_path / "p", show_progress=False).history


# ---------------------------------------------------------------- offline trainers


def one_char_pairs(path, n=3):
    write_jsonl(path, [{"prompt": f"User: q{i}?\nAssistant:", "chosen": "a", "rejected": "b"}
                       for i in range(n)])  # fmt: skip
    return path


def test_dpo_batch_of_one_after_the_split(tiny_lm_dir, tmp_path):
    # 3 prompts, half held out (seed 0 hashes q1 and q2 to the held-out side): 1 training pair in a
    # batch of 32, one-character responses
    data = one_char_pairs(tmp_path / "pairs.jsonl")
    cfg = dpo.DPOConfig(model=str(tiny_lm_dir), data=str(data), eval_fraction=0.5, batch_size=32, epochs=1,
                        max_length=64, lr=1e-4)  # fmt: skip
    metrics = dpo.train(cfg, RUN, tmp_path / "d", show_progress=False).metrics
    assert (metrics["train_pairs"], metrics["eval_pairs"], metrics["steps"]) == (1, 2, 1)
    assert finite(metrics) == {}
    # one small step from the reference: the loss stays near its value at equal log-ratios, log 2
    assert metrics["eval/loss"] == pytest.approx(math.log(2), abs=0.05)


def test_reward_batch_of_one_after_the_split(tiny_lm_dir, tmp_path):
    data = one_char_pairs(tmp_path / "pairs.jsonl")
    cfg = reward.RewardConfig(model=str(tiny_lm_dir), data=str(data), eval_fraction=0.5, batch_size=32,
                              epochs=1, max_length=64, eval_every=0, gold_eval=False)  # fmt: skip
    metrics = reward.train(cfg, RUN, tmp_path / "rm").metrics
    assert metrics["eval/pairs"] == 2.0 and metrics["steps"] == 1 and finite(metrics) == {}


def test_ilql_one_one_character_response_and_equal_rewards(tiny_lm_dir, tmp_path):
    rows = [{"prompt": f"User: q{i}?\nAssistant:", "response": "a", "reward": 0.5} for i in range(2)]
    write_jsonl(tmp_path / "logged.jsonl", rows)
    cfg = ilql.ILQLConfig(
        model=str(tiny_lm_dir), data=str(tmp_path / "logged.jsonl"), batch_size=32, epochs=1
    )
    metrics = ilql.train(cfg, RUN, tmp_path / "i", show_progress=False).metrics
    assert (metrics["responses"], metrics["steps"]) == (2, 1) and finite(metrics) == {}


def test_cli_empty_texts_and_flat_scores_are_one_line(tiny_lm_dir, tmp_path, capsys):
    from rlhf.reward_model import init_reward_model, save_reward_model

    # ILQL on an empty prompt: nothing to condition the first token on (before: a RuntimeError from
    # gather, "Size does not match at dimension 1 ...")
    logged = tmp_path / "logged.jsonl"
    write_jsonl(logged, [{"prompt": "", "response": "a", "reward": 1.0}])
    err = one_line_error(capsys, ["ilql", "train", "--model", str(tiny_lm_dir), "--data", str(logged),
                                  "--out", str(tmp_path / "i"), *QUIET])  # fmt: skip
    assert err == f"rlhf: error: {logged} line 1: field 'prompt' is empty"
    # an empty response is refused where it would be trained on
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(
        pairs,
        [{"prompt": "p", "chosen": "", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "b"}],
    )
    err = one_line_error(capsys, ["dpo", "train", "--model", str(tiny_lm_dir), "--data", str(pairs),
                                  "--out", str(tmp_path / "d"), *QUIET])  # fmt: skip
    assert err == f"rlhf: error: {pairs} line 1: field 'chosen' is empty"

    model, tokenizer = init_reward_model(tiny_lm_dir, ["reward"], 1, seed=0)
    save_reward_model(tmp_path / "rm", model, tokenizer)
    # nothing at all to score: the reward model would read no tokens (before: a score of 0.0, silently)
    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "p", "response": ""}, {"prompt": "", "response": ""}])
    err = one_line_error(capsys, ["reward", "score", "--model", str(tmp_path / "rm"), "--data", str(rows),
                                  "--out", str(tmp_path / "s.jsonl"), "--device", "cpu"])  # fmt: skip
    assert (
        err
        == f"rlhf: error: {rows} line 2: fields 'prompt' and 'response' are both empty: there is nothing to score"
    )
    # normalising by scores that do not vary (before: a std of ~1e-7 stored, then clamped to 1e-6:
    # every later score multiplied by a million)
    write_jsonl(rows, [{"prompt": "p", "response": "a"}] * 3)
    err = one_line_error(capsys, ["reward", "normalize", "--model", str(tmp_path / "rm"), "--samples", str(rows),
                                  "--device", "cpu"])  # fmt: skip
    assert err.startswith(
        f"rlhf: error: {rows}: the reward model gives all 3 samples the same score (reward: std "
    )
    assert err.endswith("), so there is no scale to normalise by; use varied samples")
