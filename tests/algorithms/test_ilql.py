"""ILQL end to end on tiny models: reward placement, Polyak targets, the steered sampler, learning, CLI."""

from __future__ import annotations

import pytest
import torch

from rlhf.algorithms.ilql import ILQLConfig, ILQLHeads, generate, load_ilql, token_rewards, train
from rlhf.config import RunConfig
from rlhf.errors import UserError
from rlhf.io import write_jsonl

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def test_token_rewards():
    assert token_rewards(2.5, 3, "f:1") == [0.0, 0.0, 2.5]  # a response reward sits on the last token
    assert token_rewards((1.0, -1.0), 3, "f:1") == [1.0, -1.0, 0.0]  # per token; EOS gets 0
    with pytest.raises(UserError, match="f:7: 3 per-token rewards for a response of 2 tokens"):
        token_rewards((1.0, 2.0, 3.0), 3, "f:7")


def test_polyak_target_update_by_hand():
    heads = ILQLHeads(hidden=2, vocab=3)
    for p, tp in zip(heads.q1.parameters(), heads.target_q1.parameters(), strict=True):
        torch.testing.assert_close(p, tp)  # targets start as copies
        p.data.fill_(1.0)
        tp.data.fill_(0.0)
    heads.update_targets(0.25)  # target <- 0.25 * 1 + 0.75 * 0
    assert all(torch.allclose(tp, torch.full_like(tp, 0.25)) for tp in heads.target_q1.parameters())
    assert not any(p.requires_grad for p in heads.target_q1.parameters())


def test_steered_sampler_records_the_models_log_probs(small_world):
    """With beta = 0 and no top-k the steered policy is the LM: the sampler's recorded log-probs must
    equal a fresh forward over its samples (KV cache, positions and padding all right)."""
    from rlhf.evaluation import sampled_kl
    from rlhf.models import load_causal_lm
    from rlhf.rl_math import ilql_steered_logits
    from rlhf.rollout import SamplingConfig, sample_steered
    from rlhf.world import corpus

    _, world_dir = small_world
    lm, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    v = torch.zeros(1)

    def steer(logits, hidden):
        return ilql_steered_logits(logits, torch.zeros_like(logits), v.expand(logits.shape[0], 1), 0.0)

    prompts = corpus.sample_prompts(12, 3)  # different lengths: left padding
    samples = sample_steered(
        lm, tokenizer, prompts, SamplingConfig(max_new_tokens=12, batch_size=5), steer, seed=1
    )
    # KL of the sampler's own log-probs to the same model is exactly 0 per sample
    kls = sampled_kl(None, lm, tokenizer, samples)
    assert max(abs(k) for k in kls) < 1e-4, kls
    assert len(samples.responses) == 12 and all(len(ids) <= 12 for ids in samples.response_ids)


def logged_rows(world_dir, n_prompts: int = 200) -> list[dict]:
    """Two samples of the initial LM per prompt, with per-token rewards: 1 on the first token of an
    answer that opens with 'Sure' (about 5% of them), 0 elsewhere."""
    from rlhf.models import load_causal_lm
    from rlhf.rollout import SamplingConfig, sample
    from rlhf.world import corpus

    lm, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    prompts = corpus.sample_prompts(n_prompts, 4)
    s = sample(lm, tokenizer, prompts + prompts, SamplingConfig(max_new_tokens=16), seed=4)
    rows = []
    for p, r in zip(s.prompts, s.responses, strict=True):
        if not r:
            continue
        n_tokens = len(tokenizer(" " + r, add_special_tokens=False)["input_ids"])  # as encode_response does
        rows.append(
            {"prompt": p, "response": r, "reward": [float(r.startswith("Sure"))] + [0.0] * (n_tokens - 1)}
        )
    return rows


def sure_share(model, tokenizer, beta: float) -> float:
    from rlhf.world import corpus

    prompts = corpus.sample_prompts(96, 9)
    s = generate(model, tokenizer, prompts, beta, top_k=0, max_new_tokens=4, seed=9)
    return sum(r.startswith("Sure") for r in s.responses) / len(prompts)


def test_ilql_steers_generation_toward_the_logged_reward(small_world, tmp_path):
    from transformers import AutoModelForCausalLM

    _, world_dir = small_world
    rows = logged_rows(world_dir)
    write_jsonl(tmp_path / "logged.jsonl", rows)
    cfg = ILQLConfig(
        model=str(world_dir), data=str(tmp_path / "logged.jsonl"), epochs=4, batch_size=16, lr=1e-3
    )
    result = train(cfg, RUN, tmp_path / "ilql", show_progress=False)
    assert result.metrics["responses"] == len(rows) and (tmp_path / "ilql" / "ilql_heads.pt").is_file()
    AutoModelForCausalLM.from_pretrained(tmp_path / "ilql")  # the LM alone is plain transformers
    model, tokenizer, saved = load_ilql(tmp_path / "ilql", device="cpu")
    unsteered, steered = sure_share(model, tokenizer, 0.0), sure_share(model, tokenizer, 8.0)
    assert steered > unsteered + 0.2, (unsteered, steered)
    assert saved == {"beta": 4.0, "top_k": 20}


def test_preferences_scored_by_a_reward_function(small_world, tmp_path):
    from rlhf.algorithms.ilql import load_rows
    from rlhf.models import load_tokenizer

    _, world_dir = small_world
    write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "User: hi\nAssistant:", "chosen": "Hello there.", "rejected": "Go."},
                                           {"prompt": "User: yo\nAssistant:", "chosen": "Hello there.", "rejected": "Hey."}])  # fmt: skip
    cfg = ILQLConfig(data=str(tmp_path / "pairs.jsonl"), reward="tests.algorithms.test_ppo:brevity")
    rows = load_rows(cfg, load_tokenizer(world_dir), "cpu")
    # four distinct (prompt, response) pairs, each scored -len(response) / 50
    got = sorted((r.response, r.reward) for r in rows)
    assert [g[0] for g in got] == ["Go.", "Hello there.", "Hello there.", "Hey."]
    assert [g[1] for g in got] == pytest.approx([-3 / 50, -12 / 50, -12 / 50, -4 / 50])


def test_cli_train_generate_and_bad_rows(small_world, tmp_path, capsys):
    from rlhf.cli import main

    _, world_dir = small_world
    write_jsonl(tmp_path / "logged.jsonl", logged_rows(world_dir, 24))
    sets = [
        "ilql.max_steps=2",
        "ilql.batch_size=8",
        "run.progress=false",
        "run.device=cpu",
        "run.tensorboard=false",
    ]
    code = main(["ilql", "train", "--model", str(world_dir), "--data", str(tmp_path / "logged.jsonl"),
                 "--out", str(tmp_path / "m"), *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0 and "ILQL model saved to" in capsys.readouterr().out
    code = main(["ilql", "generate", "--model", str(tmp_path / "m"), "--n", "4", "--reference", str(world_dir),
                 "--out", str(tmp_path / "gen.jsonl"), "--set", "run.device=cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "mean helpfulness" in out and "KL to reference" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "reward": 1}\n{"prompt": "p", "response": "s"}\n')
    code = main(
        ["ilql", "train", "--model", str(world_dir), "--data", str(bad), "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "line 2: missing field 'reward'" in err and not (tmp_path / "x").exists()
    code = main(["ilql", "generate", "--model", str(world_dir)])
    assert code == 2 and "not an `rlhf ilql train` output" in capsys.readouterr().err
