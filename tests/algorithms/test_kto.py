"""KTO end to end on a tiny random model: batch layout, the first loss, learning a rule from thumbs
up/down, class balance, resume, the CLI and its errors."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from rlhf.algorithms.kto import KTOConfig, examples_of, make_batches, train
from rlhf.config import RunConfig
from rlhf.data import BinaryExample, PreferenceData, PreferencePair
from rlhf.errors import UserError
from rlhf.io import write_jsonl

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)
WORDS = ["tea", "bread", "water", "rest", "drink", "flour", "leaves", "bake", "tired", "today", "little"]


def rule_rows(n_prompts: int, seed: int) -> list[dict]:
    """Per prompt, one completion opening with "Rest" (thumbs up) and one opening with "Mix" (down),
    the rest of the words random: a rule the first completion token carries."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        prompt = f"User: {rng.choice(WORDS)} {rng.choice(WORDS)} {i}?\nAssistant:"
        for opener, label in (("Rest", True), ("Mix", False)):
            rows.append({"prompt": prompt, "completion": f"{opener} {rng.choice(WORDS)} {rng.choice(WORDS)}.",
                         "label": label})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kto") / "binary.jsonl"
    write_jsonl(path, rule_rows(96, seed=1))
    return path


def test_batches_hold_labelled_rows_then_mismatched_kl_rows(tiny_lm_dir):
    from rlhf.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_lm_dir)
    examples = [BinaryExample("User: tea?\nAssistant:", "Rest water.", True),
                BinaryExample("User: bread?\nAssistant:", "Mix flour.", False)]  # fmt: skip
    [batch] = make_batches(examples, tokenizer, KTOConfig(batch_size=2))
    assert len(batch) == 2 and batch.input_ids.shape[0] == 4
    texts = [
        tokenizer.decode(row[mask.bool()])
        for row, mask in zip(batch.input_ids, batch.attention_mask, strict=True)
    ]
    tea, bread = (0, 1) if "tea?" in texts[0] else (1, 0)  # sorted by length: either order
    assert (batch.label[tea].item(), batch.label[bread].item()) == (True, False)
    # rows 0..1: each prompt with its own completion; rows 2..3: prompt i with completion i-1 (wrapping)
    assert "tea?" in texts[tea] and "Rest water." in texts[tea]
    assert "tea?" in texts[2 + tea] and "Mix flour." in texts[2 + tea]
    assert "bread?" in texts[2 + bread] and "Rest water." in texts[2 + bread]


def test_examples_unpair_comparisons_and_filter_objectives():
    pair = PreferencePair("p", "good", "bad", weight=2.0, objective="helpful")
    tie = PreferencePair("p", "same", "alike", tie=True)
    data = PreferenceData([pair, pair, tie], [], {}, [BinaryExample("q", "ok", True)])
    examples = examples_of(data, "", True, "f.jsonl")
    # the binary row, then the pair as (good, True) and (bad, False) once; the tie gives nothing
    assert [(e.prompt, e.completion, e.label, e.weight) for e in examples] == [
        ("q", "ok", True, 1.0), ("p", "good", True, 2.0), ("p", "bad", False, 2.0)]  # fmt: skip
    assert [e.completion for e in examples_of(data, "helpful", True, "f.jsonl")] == ["good", "bad"]
    assert len(examples_of(data, "", False, "f.jsonl")) == 1
    with pytest.raises(UserError, match="f.jsonl: no examples with objective 'harmless'; the data has"):
        examples_of(data, "harmless", True, "f.jsonl")


def test_first_loss_at_policy_equal_to_reference(tiny_lm_dir, rule_file):
    from rlhf.algorithms.dpo import cache_reference_logps
    from rlhf.algorithms.kto import batch_loss
    from rlhf.data import load_preferences
    from rlhf.models import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_lm_dir, device="cpu", dtype="float32")
    examples = load_preferences(rule_file, tokenizer=tokenizer).binary[:12]
    cfg = KTOConfig(batch_size=6, undesirable_weight=2.0)
    batches = make_batches(examples, tokenizer, cfg)
    cache_reference_logps(model, batches, "cpu")
    # r = 0 and z = 0: lambda / 2 per example; the batch's labels decide its mean lambda
    loss, stats = batch_loss(model, batches[0], "cpu", cfg)
    n_good = int(batches[0].label.sum())
    expected = (0.5 * n_good + 1.0 * (6 - n_good)) / 6
    assert loss.item() == pytest.approx(expected, abs=1e-5) and stats["kl"] == pytest.approx(0.0, abs=1e-5)


def completion_logps(model_dir, prompts: list[str], completion: str) -> torch.Tensor:
    from rlhf.algorithms.dpo import sequence_logps
    from rlhf.models import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir, device="cpu", dtype="float32")
    examples = [BinaryExample(p, completion, True) for p in prompts]
    batches = make_batches(examples, tokenizer, KTOConfig(batch_size=len(prompts)))
    with torch.no_grad():
        return torch.cat([sequence_logps(model, b.rows(0, len(b)), "cpu") for b in batches])


def test_kto_learns_the_rule_from_binary_labels(tiny_lm_dir, rule_file, tmp_path):
    cfg = KTOConfig(model=str(tiny_lm_dir), data=str(rule_file), epochs=1, batch_size=16, lr=5e-3,
                    beta=0.5, eval_every=0)  # fmt: skip
    result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    m = result.metrics
    # the held-out implicit rewards part: thumbs-up completions gain, thumbs-down ones lose
    assert m["eval/rewards/chosen"] > 0 > m["eval/rewards/rejected"], m
    assert (m["train_desirable"], m["train_undesirable"]) == (m["train_undesirable"], m["train_desirable"])
    assert m["train_desirable"] + m["eval_desirable"] == 96 and m["train_weight_ratio"] == 1.0
    # new prompts: log pi(Rest ...) - log pi_ref(Rest ...) rises against the same for "Mix ..."
    prompts = [f"User: {w} now?\nAssistant:" for w in WORDS]
    good = completion_logps(tmp_path / "policy", prompts, "Rest tea.") - completion_logps(
        tiny_lm_dir, prompts, "Rest tea."
    )
    bad = completion_logps(tmp_path / "policy", prompts, "Mix tea.") - completion_logps(
        tiny_lm_dir, prompts, "Mix tea."
    )
    # (measured: a margin of 7.8 nats at the least, 8.2 on average, after one epoch of 11 steps)
    assert (good - bad).min() > 2.0, (good, bad)


def test_unbalanced_data_warns_with_the_advice(tiny_lm_dir, tmp_path):
    rows = [r for r in rule_rows(40, seed=2) if r["label"] or r["prompt"].endswith(("0?\nAssistant:",))]
    write_jsonl(tmp_path / "unbalanced.jsonl", rows)
    cfg = KTOConfig(
        model=str(tiny_lm_dir), data=str(tmp_path / "unbalanced.jsonl"), max_steps=1, batch_size=8
    )
    with pytest.warns(
        UserWarning, match=r"outside \[1, 4/3\] that the KTO paper advises; e\.g\. kto\.undesirable_weight="
    ):
        result = train(cfg, RUN, tmp_path / "p", show_progress=False)
    assert result.metrics["train_weight_ratio"] > 4 / 3


def test_one_class_only_is_refused_before_training(tiny_lm_dir, tmp_path):
    write_jsonl(tmp_path / "up.jsonl", [r for r in rule_rows(40, seed=2) if r["label"]])
    cfg = KTOConfig(model=str(tiny_lm_dir), data=str(tmp_path / "up.jsonl"), max_steps=1, batch_size=8)
    with pytest.raises(UserError, match=r"up.jsonl: every training example is desirable; KTO learns from"):
        train(cfg, RUN, tmp_path / "p", show_progress=False)
    assert not (tmp_path / "p" / "config.json").exists()
    # comparisons only, without use_pairs: none is a binary example, and the message says why
    pairs = [
        {"prompt": f"User: q{i}?\nAssistant:", "chosen": " Rest.", "rejected": " Mix."} for i in range(10)
    ]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = KTOConfig(model=str(tiny_lm_dir), data=str(tmp_path / "pairs.jsonl"), max_steps=1, use_pairs=False)
    with pytest.raises(UserError, match=r"no binary examples in the training split; comparisons count only"):
        train(cfg, RUN, tmp_path / "q", show_progress=False)


def test_resume_matches_an_uninterrupted_run(tiny_lm_dir, rule_file, tmp_path):
    from safetensors.torch import load_file

    base = dict(
        model=str(tiny_lm_dir), data=str(rule_file), max_steps=4, batch_size=16, lr=5e-3, eval_every=2
    )
    train(KTOConfig(**base), RUN, tmp_path / "full", show_progress=False)
    stopped = train(KTOConfig(**base, stop_after_steps=2), RUN, tmp_path / "resumed", show_progress=False)
    assert stopped.metrics == {"stopped_at_step": 2}
    train(KTOConfig(**base), RUN, tmp_path / "resumed", resume=True, show_progress=False)
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    logged = [
        json.loads(line) for line in (tmp_path / "full" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("kl" in row and "rewards/chosen" in row and "logps/chosen" in row for row in logged), logged[
        :2
    ]


def test_cli_kto_train_and_bad_input(tiny_lm_dir, rule_file, tmp_path, capsys):
    from rlhf.cli import main

    sets = ["kto.max_steps=2", "kto.batch_size=8", "kto.lora_r=2", "run.progress=false", "run.device=cpu",
            "run.tensorboard=false"]  # fmt: skip
    args = [
        "kto",
        "train",
        "--policy",
        str(tiny_lm_dir),
        "--data",
        str(rule_file),
        "--out",
        str(tmp_path / "p"),
    ]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    out, err = capsys.readouterr()
    assert "policy saved to" in out and "train_desirable" in out
    # the class balance, one line when the data is loaded (96 prompts x one up, one down; 10% held out)
    assert re.search(
        r"KTO: (\d+) desirable, \1 undesirable training examples \((\d+) / \2 held out\)", err
    ), err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "a", "label": "yes"}\n')
    code = main(
        ["kto", "train", "--model", str(tiny_lm_dir), "--data", str(bad), "--out", str(tmp_path / "q")]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and "line 1: field 'label' must be true or false" in err and not (tmp_path / "q").exists()
    )
    assert main([*args[:-2], "--out", str(tmp_path / "r"), "--set", "kto.batch_size=1"]) == 2
    assert "kto.batch_size must be at least 2" in capsys.readouterr().err
    # a pairs-only file trains too (unpaired); DPO on a binary file says where to go
    code = main(
        ["dpo", "train", "--model", str(tiny_lm_dir), "--data", str(rule_file), "--out", str(tmp_path / "d")]
    )
    assert code == 2 and "train with `rlhf kto train`" in capsys.readouterr().err
