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
    # log-prob of each response under the distribution it was sampled from (`sample_steered` only)
    logprobs: list[float] | None = None


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
        _collect(out[:, enc["input_ids"].shape[1] :], tokenizer, responses, response_ids, finished)
    return Samples(list(prompts), responses, response_ids, finished)


def _collect(generated: torch.Tensor, tokenizer, responses: list, response_ids: list, finished: list) -> None:
    """Append each generated row (B, T_new), cut after its first stop token, to the three lists."""
    stop_id = tokenizer.eos_token_id
    for row in generated.tolist():
        ids = row[: row.index(stop_id) + 1] if stop_id in row else row
        response_ids.append(ids)
        finished.append(stop_id in ids)
        responses.append(tokenizer.decode(ids, skip_special_tokens=True).strip())


@torch.no_grad()
def sample_steered(
    model, tokenizer, prompts: Sequence[str], cfg: SamplingConfig, steer, seed: int | None = None
) -> Samples:
    """Sample like `sample`, but each step's next-token logits come from `steer(logits, hidden)`:
    logits (B, V) of the LM and hidden (B, D), its last hidden state at that position.

    `generate` cannot give a logits processor the hidden state, so this is a plain KV-cached loop
    (left-padded prompts, explicit position ids); ILQL steers the LM with its Q and V heads here.
    `cfg.top_k` and `cfg.top_p` are left to `steer`; `cfg.temperature` divides the steered logits.
    """
    import inspect

    from transformers import DynamicCache

    # transformers 5 renamed `past_key_values` to `cache`
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    stop_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    responses, response_ids, finished, sequence_logprobs = [], [], [], []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = list(prompts[start : start + cfg.batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        attention_mask = enc["attention_mask"]
        positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B, L)
        cache = {cache_arg: DynamicCache(config=model.config)}
        out = model(input_ids=enc["input_ids"], attention_mask=attention_mask, position_ids=positions,
                    use_cache=True, output_hidden_states=True, **cache)  # fmt: skip
        position = positions[:, -1:]  # (B, 1)
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        total = torch.zeros(len(batch), device=device)  # log-prob of the response so far
        tokens = []
        for _ in range(cfg.max_new_tokens):
            logits = steer(out.logits[:, -1], out.hidden_states[-1][:, -1])  # (B, V)
            if cfg.temperature <= 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
                logprobs = torch.zeros_like(logits)
            else:
                logprobs = torch.log_softmax(logits / cfg.temperature, dim=-1)
                next_token = torch.multinomial(logprobs.exp(), 1)  # (B, 1)
            total += torch.where(done, 0.0, logprobs.gather(1, next_token)[:, 0])
            next_token = torch.where(done[:, None], torch.full_like(next_token, pad_id), next_token)
            tokens.append(next_token)
            done |= next_token[:, 0] == stop_id
            if done.all():
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_token)], dim=1)
            position = position + 1
            out = model(input_ids=next_token, attention_mask=attention_mask, position_ids=position,
                        use_cache=True, output_hidden_states=True, **cache)  # fmt: skip
        _collect(torch.cat(tokens, dim=1), tokenizer, responses, response_ids, finished)
        sequence_logprobs.extend(total.tolist())
    return Samples(list(prompts), responses, response_ids, finished, sequence_logprobs)
