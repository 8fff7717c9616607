"""Shared fixtures: a tiny causal LM and tokenizer made in the test session (no hub needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

TEXTS = [
    "User: what is tea?\nAssistant: Tea is a drink made from leaves.",
    "User: how do I bake bread?\nAssistant: Mix flour and water, knead, then bake.",
    "User: I feel tired today.\nAssistant: Rest a little and drink some water.",
] * 20


def make_tokenizer():
    from rlhf.world.build import train_tokenizer

    return train_tokenizer(TEXTS, vocab_size=300)


def make_model(tokenizer, seed: int = 0, tie_word_embeddings: bool = False):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A directory with a 2-layer Llama and its tokenizer, saved with save_pretrained."""
    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = make_tokenizer()
    make_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# A small world (2 layers x 64) that builds in a few seconds: real in-domain text for end-to-end tests.
SMALL_WORLD = dict(
    n_dialogues=3000, vocab_size=512, n_layers=2, hidden_size=64, n_heads=2, intermediate_size=128,
    steps=200, batch_size=16, warmup_steps=20,
)  # fmt: skip


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """(WorldConfig, directory) of the small world, built once per test session."""
    from rlhf.world.build import WorldConfig, build_world

    cfg = WorldConfig(**SMALL_WORLD, cache_dir=str(tmp_path_factory.mktemp("world_cache")))
    return cfg, build_world(cfg, show_progress=False)


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """Factory `family_dir(name, n_positions=128) -> Path`: a saved tiny model of a family (tests/families.py).

    Each (name, n_positions) is built once per session and cached.
    """
    from tests.families import build_family

    built: dict[tuple[str, int], Path] = {}

    def get(name: str, n_positions: int = 128) -> Path:
        key = (name, n_positions)
        if key not in built:
            path = tmp_path_factory.mktemp(f"family_{name}_{n_positions}")
            built[key] = build_family(name, path, n_positions=n_positions)
        return built[key]

    return get
