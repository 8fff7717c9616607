"""Build the bundled world's tokenizer and tiny pretrained causal LM, cached and re-used.

Steps: (1) generate the dialogue corpus, (2) train a byte-level BPE tokenizer on it with the `tokenizers`
library, (3) initialise a small `LlamaForCausalLM`, (4) pretrain it on the corpus (next-token loss on the
whole dialogue), (5) save model and tokenizer with `save_pretrained`, atomically, with `world.json`
describing how it was built. A directory whose `world.json` records the same build key is re-used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.config import ConfigError, help_field
from rlhf.metrics import MetricsLogger, progress
from rlhf.world import corpus

# Bump when the corpus generator, tokenizer or model recipe changes, so stale caches are rebuilt.
WORLD_VERSION = 2
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Renders conversational data in the world's own format: "User: ...\nAssistant: ...<eos>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{% if not loop.first and loop.previtem['role'] == 'assistant' %}{{ '\\n' }}{% endif %}User: {{ message['content'] }}\nAssistant:"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
)


@dataclass
class WorldConfig:
    """The bundled toy world: corpus size, tokenizer, tiny LM and its pretraining."""

    seed: int = help_field(0, "Seed of the corpus, the model initialisation and the pretraining order.")
    n_dialogues: int = help_field(
        30000, "Dialogues generated for pretraining (the response-quality mix is the corpus default)."
    )
    eval_fraction: float = help_field(0.05, "Share of dialogues held out to measure the pretraining loss.")
    vocab_size: int = help_field(2048, "BPE vocabulary size of the world tokenizer.")
    n_layers: int = help_field(4, "Transformer layers (the benchmark reference size is 4).")
    hidden_size: int = help_field(128, "Hidden size (reference: 128).")
    n_heads: int = help_field(4, "Attention heads (reference: 4).")
    intermediate_size: int = help_field(384, "MLP width.")
    max_length: int = help_field(128, "Maximum tokens per dialogue (context length of the model).")
    steps: int = help_field(1200, "Pretraining optimiser steps.")
    batch_size: int = help_field(32, "Dialogues per pretraining step.")
    lr: float = help_field(3e-3, "Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = help_field(100, "Linear warm-up steps.")
    weight_decay: float = help_field(0.01, "AdamW weight decay.")
    cache_dir: str = help_field(
        "", "Where built worlds are cached; empty = $RLHF_CACHE/world or ~/.cache/rlhf/world."
    )

    def validate(self) -> None:
        for name in (
            "n_dialogues",
            "vocab_size",
            "n_layers",
            "hidden_size",
            "n_heads",
            "steps",
            "batch_size",
            "max_length",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"world.{name} must be positive; got {getattr(self, name)}")
        if self.hidden_size % self.n_heads:
            raise ConfigError(
                f"world.hidden_size ({self.hidden_size}) must be divisible by world.n_heads ({self.n_heads})"
            )
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"world.eval_fraction must be in (0, 1); got {self.eval_fraction}")
        if self.vocab_size < 300:
            raise ConfigError(
                f"world.vocab_size must be at least 300 (256 bytes + merges); got {self.vocab_size}"
            )

    def build_key(self) -> str:
        recipe = {k: v for k, v in asdict(self).items() if k != "cache_dir"}
        recipe["version"] = WORLD_VERSION
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir(cfg: WorldConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    root = os.environ.get("RLHF_CACHE") or Path.home() / ".cache" / "rlhf"
    return Path(root) / "world"


def world_dir(cfg: WorldConfig) -> Path:
    return default_cache_dir(cfg) / f"world-{cfg.build_key()}"


def is_built(path: str | Path, cfg: WorldConfig) -> bool:
    info = Path(path) / "world.json"
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text())["build_key"] == cfg.build_key()
    except (ValueError, KeyError):
        return False


def dialogue_text(dialogue: corpus.Dialogue) -> str:
    """The pretraining text of one dialogue (EOS is appended as a token id, not as text)."""
    return f"{dialogue.prompt} {dialogue.response}"


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# ----------------------------------------------------------------------------- model and pretraining


def init_model(cfg: WorldConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def encode_dialogues(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [row[: max_length - 1] + [tokenizer.eos_token_id] for row in ids]


def collate(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows into a batch; padded positions are masked out of attention and loss."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@torch.no_grad()
def mean_token_loss(model: Any, rows: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    """Average next-token cross-entropy over all tokens of `rows`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], pad_id)
        n_targets = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n_targets
        count += n_targets
    return total / max(count, 1)


def lr_at(step: int, cfg: WorldConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress_frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))


def length_bucketed_batches(
    rows: list[list[int]], batch_size: int, rng: random.Random
) -> list[list[list[int]]]:
    """Batches of rows of similar length, in random order: padding (wasted compute) drops by about half."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), rng.random()))
    batches = [
        [rows[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)
    ]
    rng.shuffle(batches)
    return batches


def pretrain(
    model: Any,
    train_rows: list[list[int]],
    eval_rows: list[list[int]],
    pad_id: int,
    cfg: WorldConfig,
    logger: MetricsLogger | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """Next-token pretraining with AdamW over length-bucketed batches; returns held-out loss before and after."""
    from rlhf.errors import check_finite

    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
    )
    eval_before = mean_token_loss(model, eval_rows, pad_id)
    model.train()
    batches: list[list[list[int]]] = []
    bar = progress(range(cfg.steps), desc="pretraining world LM", enabled=show_progress, unit="step")
    for step in bar:
        if not batches:
            batches = length_bucketed_batches(train_rows, cfg.batch_size, rng)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(**collate(batches.pop(), pad_id)).loss
        check_finite(loss.item(), "pretraining loss", step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if logger is not None:
                logger.log({"loss/lm": loss.item(), "optim/lr": lr_at(step, cfg)}, step)
    eval_after = mean_token_loss(model, eval_rows, pad_id)
    model.eval()
    if logger is not None:
        logger.log({"eval/loss_before": eval_before, "eval/loss_after": eval_after}, cfg.steps)
    return {"eval_loss_before": eval_before, "eval_loss_after": eval_after}


# ----------------------------------------------------------------------------- build


def build_world(
    cfg: WorldConfig, out: str | Path | None = None, force: bool = False, show_progress: bool = True
) -> Path:
    """Build (or re-use) the world's tokenizer and LM in `out` (default: the cache); return the directory.
    Processes that need the same world at once (the ranks of `accelerate launch`, parallel runs) build it
    once: the first holds a lock beside `out` while it builds, the others wait and then re-use it."""
    from filelock import FileLock

    target = Path(out).expanduser() if out else world_dir(cfg)
    if not force and is_built(target, cfg):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not force and is_built(target, cfg):  # built by another process while this one waited
            return target
        return _build(cfg, target, show_progress)


def _build(cfg: WorldConfig, target: Path, show_progress: bool) -> Path:
    from rlhf.models import count_parameters, save_pretrained_atomic

    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; --out must be a directory")
    if target.exists() and any(target.iterdir()) and not (target / "world.json").is_file():
        raise ConfigError(f"{target} exists and is not a world directory; choose an empty or new --out")
    started = time.monotonic()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    dialogues = corpus.generate_corpus(cfg.n_dialogues, seed=cfg.seed)  # step 1
    texts = [dialogue_text(d) for d in dialogues]
    n_eval = max(1, int(len(texts) * cfg.eval_fraction))
    eval_texts, train_texts = texts[:n_eval], texts[n_eval:]
    tokenizer = train_tokenizer(train_texts, cfg.vocab_size)  # step 2
    model = init_model(cfg, tokenizer)  # step 3
    train_rows = encode_dialogues(tokenizer, train_texts, cfg.max_length)
    eval_rows = encode_dialogues(tokenizer, eval_texts, cfg.max_length)
    log_dir = target.parent / f".{target.name}.logs"
    with MetricsLogger(log_dir, tensorboard=False) as logger:
        losses = pretrain(
            model, train_rows, eval_rows, tokenizer.pad_token_id, cfg, logger, show_progress
        )  # step 4
    info = {
        "build_key": cfg.build_key(),
        "version": WORLD_VERSION,
        "config": asdict(cfg),
        "parameters": count_parameters(model),
        "train_dialogues": len(train_texts),
        "eval_dialogues": len(eval_texts),
        "mean_tokens_per_dialogue": float(np.mean([len(r) for r in train_rows])),
        "seconds": round(time.monotonic() - started, 1),
        **losses,
    }

    def write_info(path: Path) -> None:
        path.write_text(json.dumps(info, indent=2))

    def write_metrics(path: Path) -> None:
        path.write_bytes((log_dir / "metrics.jsonl").read_bytes())

    extra = {"world.json": write_info, "pretrain_metrics.jsonl": write_metrics}
    save_pretrained_atomic(target, model, tokenizer, extra_files=extra)  # step 5
    shutil.rmtree(log_dir, ignore_errors=True)
    return target


def read_world_info(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "world.json").read_text())
