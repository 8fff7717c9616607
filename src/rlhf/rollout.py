"""The generation core: prompts in, sampled responses out (batched, left-padded, KV-cached, stops at EOS).

Every sampler in rlhf goes through `sample`; the on-policy trainers extend its output with log-probs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf.config import help_field


@dataclass
class SamplingConfig:
    """How responses are sampled."""

    max_new_tokens: int = help_field(48, "Maximum number of tokens generated per response.")
    temperature: float = help_field(1.0, "Sampling temperature; 0 means greedy decoding.")
    top_k: int = help_field(0, "Keep only the k most likely tokens (0 = off).")
    top_p: float = help_field(
        1.0, "Nucleus sampling: keep the smallest set of tokens with this total probability."
    )
    batch_size: int = help_field(32, "Prompts generated in one forward batch.")


@dataclass
class Samples:
    """Generated responses and the token ids behind them."""

    prompts: list[str]
    responses: list[str]
    response_ids: list[list[int]]  # generated tokens up to and including the stop token
    finished: list[bool]  # whether each response emitted the stop token


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], cfg: SamplingConfig, seed: int | None = None) -> Samples:
    """Sample one response per prompt with the model's `generate` (KV cache on), in batches."""
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    stop_id = tokenizer.eos_token_id
    tokenizer.padding_side = "left"  # decoder-only models continue from the right end of the prompt
    responses, response_ids, finished = [], [], []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = list(prompts[start : start + cfg.batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        greedy = cfg.temperature <= 0
        out = model.generate(
            **enc,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else cfg.temperature,
            top_k=cfg.top_k if not greedy and cfg.top_k > 0 else None,
            top_p=cfg.top_p if not greedy and cfg.top_p < 1.0 else None,
            eos_token_id=stop_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        generated = out[:, enc["input_ids"].shape[1] :]  # (B, T_new)
        for row in generated.tolist():
            ids = row[: row.index(stop_id) + 1] if stop_id in row else row
            response_ids.append(ids)
            finished.append(stop_id in ids)
            responses.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return Samples(list(prompts), responses, response_ids, finished)
