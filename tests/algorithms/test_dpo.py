"""DPO end to end on tiny models: batch layout by hand, cached reference, learning, resume, CLI, 2 processes."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from rlhf.algorithms.dpo import DPOBatch, DPOConfig, collate_pairs, make_batches, train
from rlhf.config import RunConfig
from rlhf.io import write_jsonl
from rlhf.sequences import encode_response, fit_length

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def test_fit_length_cuts_prompt_left_then_response_right():
    assert fit_length([1, 2, 3, 4], [5, 6], 5) == ([2, 3, 4], [5, 6])
    assert fit_length([1, 2, 3, 4], [5, 6, 7, 8, 9], 4) == ([4], [5, 6, 7])  # one prompt token kept
    assert fit_length([1, 2], [5], 10) == ([1, 2], [5])
    # a leading BOS (id 1 here) stays in front of the kept tail: [BOS, 4] + [5, 6], not [3, 4] + [5, 6]
    assert fit_length([1, 2, 3, 4], [5, 6], 4, bos_id=1) == ([1, 4], [5, 6])


def test_collate_pairs_layout_by_hand():
    # two pairs: prompts [1, 2] and [3]; chosen [4, 0] / [5], rejected [6] / [7, 8, 0]  (0 = EOS here)
    ids, mask, response_mask, start = collate_pairs([([1, 2], [4, 0], [6]), ([3], [5], [7, 8, 0])], pad_id=9)
    # rows: chosen of pair 1 and 2, then rejected of pair 1 and 2; contiguous, right-padded to 4
    assert ids.tolist() == [[1, 2, 4, 0], [3, 5, 9, 9], [1, 2, 6, 9], [3, 7, 8, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    # responses can start at column 1 (the shorter prompt); masks cover columns 1..3
    assert start == 1
    assert response_mask.tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("form,expected", [("sum", 25.0), ("mean", 1.0)])
def test_ipo_on_mean_or_summed_log_ratios_by_hand(monkeypatch, form, expected):
    from rlhf.algorithms import dpo

    # one pair: chosen 2 response tokens, log pi -2, ref -4; rejected 4 tokens, log pi -8, ref -4; tau 0.5
    #   sum:  h = (-2 + 4) - (-8 + 4) = 6,                       (6 - 1 / (2 * 0.5))^2 = 25
    #   mean: h = (-2 + 4) / 2 - (-8 + 4) / 4 = 1 - (-1) = 2,    (2 - 1)^2 = 1
    batch = DPOBatch(
        input_ids=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long),
        response_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]), query_width=1, weight=torch.ones(1),
        tie=torch.zeros(1, dtype=torch.bool), ref_logps=torch.tensor([-4.0, -4.0]),
    )  # fmt: skip
    monkeypatch.setattr(dpo, "sequence_logps", lambda model, batch, device: torch.tensor([-2.0, -8.0]))
    cfg = DPOConfig(loss_type="ipo", beta=0.5, ipo_logps=form)
    loss, _ = dpo.batch_loss(None, batch, "cpu", cfg)
    assert loss.item() == pytest.approx(expected)
    sigmoid, _ = dpo.batch_loss(None, batch, "cpu", DPOConfig(beta=0.5, ipo_logps=form))
    assert sigmoid.item() == pytest.approx(
        math.log1p(math.exp(-0.5 * 6))
    )  # DPO: always sums, -log sigmoid(3)


def test_batched_log_probs_equal_one_pair_at_a_time(small_world):
    from rlhf.algorithms.dpo import sequence_logps
    from rlhf.logprobs import response_logprobs
    from rlhf.models import load_causal_lm

    _, world_dir = small_world
    model, _ = load_causal_lm(world_dir, device="cpu", dtype="float32")
    rows = [([5, 6, 7], [8, 9, 2], [10, 2]), ([11], [12, 13, 14, 2], [2]), ([15, 16], [17, 2], [18, 19, 2])]
    ids, mask, response_mask, start = collate_pairs(rows, pad_id=0)
    batch_logps = sequence_logps(
        model,
        DPOBatch(ids, mask, response_mask, start, torch.ones(3), torch.zeros(3, dtype=torch.bool)),
        "cpu",
    )
    singles = []
    for prompt, response in [(r[0], r[1]) for r in rows] + [(r[0], r[2]) for r in rows]:
        one = torch.tensor([prompt + response])
        singles.append(response_logprobs(model, one, torch.ones_like(one), len(prompt))[0].sum())
    torch.testing.assert_close(batch_logps, torch.stack(singles).detach(), atol=1e-4, rtol=1e-4)


def test_response_tokens_are_what_the_policy_would_generate(small_world):
    from rlhf.models import load_tokenizer

    _, world_dir = small_world
    tokenizer = load_tokenizer(world_dir)
    prompt = "User: I made fried rice.\nAssistant:"
    ids = encode_response(tokenizer, prompt, "Nice!")
    # the world's dialogues put one space after "Assistant:"; the response ends with EOS
    assert tokenizer.decode(ids[:-1]) == " Nice!" and ids[-1] == tokenizer.eos_token_id
    whole = tokenizer(prompt + " Nice!", add_special_tokens=False)["input_ids"]
    assert tokenizer(prompt, add_special_tokens=False)["input_ids"] + ids[:-1] == whole


def sure_rows(n: int, seed: int) -> list[dict]:
    """Chosen answers open with 'Sure', rejected ones do not: a preference one early token expresses."""
    from rlhf.world import corpus

    rng = random.Random(seed)
    rows = []
    for d in corpus.generate_corpus(n, seed):
        plain = d.response.removeprefix("Sure").lstrip(" ,.!")
        if rng.random() < 0.5:  # some rejected answers are the same words without the opener
            rows.append({"prompt": d.prompt, "chosen": "Sure. " + plain, "rejected": plain})
        else:
            rows.append({"prompt": d.prompt, "chosen": "Sure, " + plain, "rejected": "Well. " + plain})
    return rows


@pytest.fixture(scope="module")
def sure_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpo") / "pairs.jsonl"
    write_jsonl(path, sure_rows(320, seed=3))
    return path


def test_reference_cache_and_first_loss(small_world, sure_file):
    from rlhf.algorithms.dpo import batch_loss, cache_reference_logps, sequence_logps
    from rlhf.data import load_preferences
    from rlhf.models import load_causal_lm

    _, world_dir = small_world
    model, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    pairs = load_preferences(sure_file, tokenizer=tokenizer).pairs[:20]
    cfg = DPOConfig(batch_size=8)
    batches = make_batches(pairs, tokenizer, cfg)
    assert sum(len(b) for b in batches) == 20
    cache_reference_logps(model, batches, "cpu")
    # the cache is the initial model's log-probs; at the start policy = reference, so the loss is log 2
    torch.testing.assert_close(batches[0].ref_logps, sequence_logps(model, batches[0], "cpu").detach())
    loss, stats = batch_loss(model, batches[0], "cpu", cfg)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and stats["rewards/margin"] == 0.0


def mean_length(model_dir, n: int = 64) -> float:
    from rlhf.models import load_causal_lm
    from rlhf.rollout import SamplingConfig, sample
    from rlhf.world import corpus

    model, tokenizer = load_causal_lm(model_dir, device="cpu", dtype="float32")
    samples = sample(model, tokenizer, corpus.sample_prompts(n, 9), SamplingConfig(max_new_tokens=24), seed=9)
    return sum(len(ids) for ids in samples.response_ids) / n


def test_dpo_on_policy_pairs_changes_what_the_policy_generates(small_world, sure_file, tmp_path):
    """Two samples of the initial policy per prompt, the shorter one preferred: after DPO the policy's
    own samples are shorter (DPO works on data near the policy; measured 21.5 -> 15.8 tokens)."""
    from transformers import AutoModelForCausalLM

    from rlhf.models import load_causal_lm
    from rlhf.rollout import SamplingConfig, sample
    from rlhf.world import corpus

    _, world_dir = small_world
    model, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    prompts = corpus.sample_prompts(200, 4)
    twice = sample(model, tokenizer, prompts + prompts, SamplingConfig(max_new_tokens=24), seed=4)
    rows = [
        {"prompt": p, "chosen": min(a, b, key=len), "rejected": max(a, b, key=len)}
        for p, a, b in zip(prompts, twice.responses[:200], twice.responses[200:], strict=True)
        if a and b and len(a) != len(b)
    ]
    write_jsonl(tmp_path / "shorter.jsonl", rows)
    cfg = DPOConfig(
        model=str(world_dir), data=str(tmp_path / "shorter.jsonl"), epochs=3, batch_size=16, lr=1e-3
    )
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    before, after = mean_length(world_dir), mean_length(tmp_path / "policy")
    assert after < before - 3, (before, after)
    AutoModelForCausalLM.from_pretrained(tmp_path / "policy")  # plain transformers
    saved = json.loads((tmp_path / "policy" / "eval_metrics.json").read_text())
    assert saved["train_pairs"] + saved["eval_pairs"] == len(rows) and result.metrics["steps"] > 0


def test_dpo_separates_chosen_from_rejected(small_world, sure_file, tmp_path):
    _, world_dir = small_world
    cfg = DPOConfig(model=str(world_dir), data=str(sure_file), epochs=3, batch_size=16, lr=1e-3)
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    assert result.metrics["eval/accuracy"] >= 0.95 and result.metrics["eval/margin"] > 0, result.metrics


def test_resume_matches_an_uninterrupted_run(small_world, sure_file, tmp_path):
    from safetensors.torch import load_file

    _, world_dir = small_world
    base = dict(model=str(world_dir), data=str(sure_file), max_steps=6, batch_size=16, lr=1e-3, eval_every=3)
    train(DPOConfig(**base), RUN, tmp_path / "full", show_progress=False)
    stopped = train(DPOConfig(**base, stop_after_steps=3), RUN, tmp_path / "resumed", show_progress=False)
    assert stopped.metrics == {"stopped_at_step": 3} and not (tmp_path / "resumed" / "config.json").exists()
    train(DPOConfig(**base), RUN, tmp_path / "resumed", resume=True, show_progress=False)
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_lora_and_ipo_and_objective_filter(small_world, sure_file, tmp_path):
    from transformers import AutoModelForCausalLM

    _, world_dir = small_world
    cfg = DPOConfig(
        model=str(world_dir), data=str(sure_file), max_steps=4, batch_size=16, lora_r=4, loss_type="ipo"
    )
    train(cfg, RUN, tmp_path / "lora", show_progress=False)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in name for name, _ in saved.named_parameters())
    from rlhf.errors import UserError

    with pytest.raises(UserError, match="no pairs with objective 'harmless'"):
        train(DPOConfig(model=str(world_dir), data=str(sure_file), objective="harmless"), RUN, tmp_path / "x")


def test_cli_dpo_train_and_bad_input(small_world, sure_file, tmp_path, capsys):
    from rlhf.cli import main

    _, world_dir = small_world
    sets = [
        "dpo.max_steps=2",
        "dpo.batch_size=8",
        "run.progress=false",
        "run.device=cpu",
        "run.tensorboard=false",
    ]
    args = ["dpo", "train", "--model", str(world_dir), "--data", str(sure_file), "--out", str(tmp_path / "p")]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    assert "policy saved to" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    code = main(["dpo", "train", "--model", str(world_dir), "--data", str(bad), "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and "line 1" in err and not (tmp_path / "q").exists()
    assert main([*args[:-2], "--out", str(tmp_path / "r"), "--set", "dpo.loss_type=hinge"]) == 2
    assert "dpo.loss_type must be one of sigmoid, ipo" in capsys.readouterr().err


def test_eval_split_of_the_training_datasetdict(small_world, tmp_path):
    import datasets

    # --eval-split test without --eval-data: train on the "train" split, evaluate on the 8 "test" pairs
    rows = sure_rows(40, seed=5)
    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:32]), "test": datasets.Dataset.from_list(rows[32:])}
    ).save_to_disk(dd)
    _, world_dir = small_world
    cfg = DPOConfig(model=str(world_dir), data=str(dd), eval_split="test", max_steps=1, batch_size=8)
    result = train(cfg, RUN, tmp_path / "p", show_progress=False)
    saved = json.loads((tmp_path / "p" / "eval_metrics.json").read_text())
    assert (saved["eval_split"], saved["train_pairs"], saved["eval_pairs"]) == ("test", 32, 8)
    assert result.metrics["eval_split"] == "test"


@pytest.mark.slow
def test_two_process_accelerate_dpo(small_world, sure_file, tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    _, world_dir = small_world
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    accelerate = Path(sys.executable).parent / "accelerate"
    sets = ["dpo.epochs=3", "dpo.batch_size=8", "dpo.lr=1e-3", "run.progress=false", "run.device=cpu",
            "run.tensorboard=false"]  # fmt: skip
    two = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
         "-m", "rlhf", "dpo", "train", "--model", str(world_dir), "--data", str(sure_file),
         "--out", str(tmp_path / "two"), *[arg for s in sets for arg in ("--set", s)]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "eval_metrics.json").read_text())
    assert metrics["eval/accuracy"] >= 0.95, metrics
