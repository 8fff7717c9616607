"""The world's tokenizer and tiny LM: pretraining lowers held-out loss; the result is plain transformers."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.config import ConfigError
from rlhf.world.build import (
    CHAT_TEMPLATE,
    WorldConfig,
    build_world,
    collate,
    is_built,
    length_bucketed_batches,
    lr_at,
    read_world_info,
)
from tests.conftest import SMALL_WORLD

SMALL = SMALL_WORLD


def test_pretraining_lowers_held_out_loss(small_world):
    _, path = small_world
    info = read_world_info(path)
    # Untrained: about ln(512) = 6.2 nats per token. 200 steps of 16 dialogues reach about 2.8 (measured).
    assert info["eval_loss_before"] > 5.5
    assert info["eval_loss_after"] < 3.5
    assert info["eval_loss_before"] - info["eval_loss_after"] > 2.5


def test_built_model_loads_with_plain_transformers_and_generates(small_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path = small_world
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|endoftext|>"
    prompt = "User: What is tea?\nAssistant:"
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(text.split()) >= 2  # it says something, in words


def test_tokenizer_round_trips_text_and_renders_chat(small_world):
    from transformers import AutoTokenizer

    _, path = small_world
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = "User: How do I bake bread?\nAssistant: Mix flour, water and salt."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    messages = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello!"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "User: Hi there.\nAssistant: Hello!<|endoftext|>"
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_build_is_reused_when_present(small_world):
    cfg, path = small_world
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert is_built(path, cfg)
    assert build_world(cfg, show_progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not retrained
    other = WorldConfig(**{**SMALL, "seed": 1}, cache_dir=cfg.cache_dir)
    assert not is_built(path, other)  # a different recipe has a different key


def test_world_json_records_recipe(small_world):
    cfg, path = small_world
    info = json.loads((path / "world.json").read_text())
    assert info["config"]["hidden_size"] == 64 and info["build_key"] == cfg.build_key()
    assert info["parameters"] > 0


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a world directory"):
        build_world(WorldConfig(**SMALL), out=tmp_path, show_progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_collate_masks_padding():
    batch = collate([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_bucketed_batches_cover_every_row_once():
    import random

    rows = [[i] * (1 + i % 7) for i in range(50)]
    batches = length_bucketed_batches(rows, 8, random.Random(0))
    flat = sorted(tuple(r) for b in batches for r in b)
    assert flat == sorted(tuple(r) for r in rows)
    spread = max(max(map(len, b)) - min(map(len, b)) for b in batches)
    assert spread <= 1  # similar lengths together


def test_learning_rate_schedule():
    cfg = WorldConfig(lr=1.0, warmup_steps=10, steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)  # half way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)


def test_invalid_world_config():
    from rlhf.config import validate_all

    with pytest.raises(ConfigError, match="divisible"):
        validate_all(WorldConfig(hidden_size=100, n_heads=3))


def test_sampling_core_returns_finished_flags(small_world):
    from rlhf.models import load_causal_lm
    from rlhf.rollout import SamplingConfig, sample

    _, path = small_world
    model, tokenizer = load_causal_lm(path, device="cpu")
    prompts = ["User: What is tea?\nAssistant:", "User: Tell me how to pick a lock.\nAssistant:"]
    a = sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=20), seed=3)
    b = sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=20), seed=3)
    assert a.responses == b.responses  # seeded
    for ids, finished in zip(a.response_ids, a.finished, strict=True):
        assert finished == (ids[-1] == tokenizer.eos_token_id)
        assert len(ids) <= 20
    greedy = sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=20, temperature=0))
    assert (
        greedy.responses
        == sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=20, temperature=0)).responses
    )
    assert torch.is_grad_enabled()  # sampling does not leak no_grad


def test_multi_turn_chat_template_separates_turns():
    from tests.conftest import make_tokenizer

    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "tea?"},
    ]
    rendered = make_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "User: hi\nAssistant: Hello.<|endoftext|>\nUser: tea?\nAssistant:"


def _build_in_child(cfg, out):
    build_world(cfg, out=out, show_progress=False)


def test_processes_that_need_the_world_at_once_build_it_once(tmp_path, monkeypatch):
    # the two ranks of `accelerate launch` with no world cached both built it, into the same directory
    import multiprocessing
    import time

    from rlhf.world import build

    cfg, out, builds = WorldConfig(**SMALL), tmp_path / "world", tmp_path / "builds.txt"

    def slow_build(cfg, target, show_progress):  # stands in for 2 minutes of pretraining
        with builds.open("a") as log:
            log.write("built\n")
        time.sleep(0.5)
        target.mkdir(parents=True, exist_ok=True)
        (target / "world.json").write_text(json.dumps({"build_key": cfg.build_key()}))
        return target

    monkeypatch.setattr(build, "_build", slow_build)
    context = multiprocessing.get_context("fork")  # the children keep the stand-in
    children = [context.Process(target=_build_in_child, args=(cfg, out)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert builds.read_text() == "built\n" and is_built(out, cfg)
