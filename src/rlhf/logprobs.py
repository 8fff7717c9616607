"""Token log-probabilities of responses: the one place they are computed, for policy, reference and rollout.

- ``gather_logprobs`` / ``entropy_from_logits``: from logits (B, T, V) to per-token numbers (B, T);
- ``response_logprobs``: one forward of a causal LM over left-padded prompt + response;
- ``first_true_indices`` / ``truncate_after_eos``: the response mask (EOS included, padding after it);
- ``sequence_logprob``: log pi(y | x) as the sum over valid tokens.

Log-probs must be taken at the temperature the responses were sampled with, and with position ids
that skip left padding, or the PPO ratio is off from the first step ("The N+ implementation details of
RLHF with PPO", Huang et al. 2024). This module imports only torch; a padded batch may run packed
(`rlhf.packing`, which uses transformers' attention interface), with the same results.
"""

from __future__ import annotations

from typing import Any

import torch


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"log-probs need a temperature > 0 (greedy decoding has none), got {temperature}")


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[token] per position; logits (B, T, V), tokens (B, T) -> (B, T).

    Uses log p(y) = z_y - logsumexp_v z_v, so no (B, T, V) log-softmax tensor is kept. Half-precision
    logits are upcast to float32 one row at a time: logsumexp in bf16 is off by ~1e-2, more than the
    PPO ratio's clip range cares about, and a full float32 copy of (B, T, V) is the largest tensor of
    the step. Pass the sampling temperature (N+ implementation details).
    """
    _check_temperature(temperature)
    if logits.dtype in (torch.float16, torch.bfloat16):
        rows = [
            gather_logprobs(row.float(), tok, temperature) for row, tok in zip(logits, tokens, strict=True)
        ]
        return torch.stack(rows)  # (B, T) float32
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of softmax(logits) per position; (B, T, V) -> (B, T), float32+.

    Via ``torch.special.entr`` (-p log p with 0 at p = 0), so logits of -inf (top-k filtered) give 0
    rather than 0 * inf = NaN. Divide by the temperature first to get the sampling entropy.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.special.entr(torch.softmax(logits, dim=-1)).sum(dim=-1)


def response_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
    return_logits: bool = False,
    value_head: Any = None,
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Log-probs of the response tokens under a causal LM, in one forward pass.

    Args:
        model:          a causal LM taking ``input_ids``, ``attention_mask``, ``position_ids`` and
                        returning ``.logits`` (B, L, V) (any Hugging Face ``*ForCausalLM``).
        input_ids:      (B, L) left-padded prompts followed by responses, so every response starts at
                        column ``response_start``; responses may be right-padded after EOS.
        attention_mask: (B, L) 1 on real tokens.
        response_start: the column of the first response token (the padded prompt width), >= 1.
        temperature:    the sampling temperature; logits are divided by it.
        return_logits:  also return the response logits (already divided by the temperature).
        value_head:     optional module (D -> 1) applied to the last hidden states at the same
                        positions; its values (B, T) are returned third (a shared-trunk critic).

    Returns logprobs (B, T) with T = L - response_start, and logits (B, T, V) or None. The logits at
    position t - 1 predict token t. Position ids are ``attention_mask.cumsum(-1) - 1`` clamped at 0, so
    a left-padded row sees positions 0, 1, ... from its first real token, exactly as if unpadded. With
    absolute position embeddings (GPT-2) the default positions 0..L-1 would shift every padded row;
    rotary ones (Llama) see only relative positions and are unaffected either way. Log-probs of padding
    after EOS are garbage: mask them with the mask of ``truncate_after_eos``.
    """
    _check_temperature(temperature)
    if not 1 <= response_start < input_ids.shape[1]:
        raise ValueError(f"response_start must be in [1, {input_ids.shape[1]}), got {response_start}")
    if _worth_packing(model, input_ids, attention_mask, response_start):
        return _packed_or_padded(
            model, input_ids, attention_mask, response_start, temperature, return_logits, value_head
        )
    return _padded_response_logprobs(
        model, input_ids, attention_mask, response_start, temperature, return_logits, value_head
    )


def _padded_response_logprobs(model, input_ids, attention_mask, response_start, temperature, return_logits,
                              value_head):  # fmt: skip
    position_ids = position_ids_from_mask(attention_mask)  # (B, L)
    kwargs = {}
    width = input_ids.shape[1] - response_start + 1  # the positions whose logits predict response tokens
    if accepts_logits_to_keep(model):
        # The LM head over the prompt's positions is wasted work: with a 2k vocabulary and a 128-wide
        # model it costs about as much as the transformer blocks, so ask for the response's logits only.
        kwargs["logits_to_keep"] = width
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        output_hidden_states=value_head is not None,
        **kwargs,
    )
    logits = out.logits[:, -width:-1]  # (B, T, V): position t - 1 predicts token t
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = gather_logprobs(logits, input_ids[:, response_start:])  # (B, T)
    if value_head is None:
        return logprobs, (logits if return_logits else None)
    # A value head on the shared trunk reads the same positions: V(s_t) from the state that emits token t.
    hidden = out.hidden_states[-1][:, response_start - 1 : -1]  # (B, T, D)
    values = value_head(hidden.to(next(value_head.parameters()).dtype)).squeeze(-1)  # (B, T)
    return logprobs, (logits if return_logits else None), values


def _worth_packing(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
) -> bool:
    """Pack when the packed row saves 15% or more of the batch's positions (padding, and the repeated
    copies of prompts sampled K times), rows are contiguous and every prompt has a token."""
    from rlhf import packing

    return (
        bool(attention_mask[:, response_start - 1].bool().all())
        and packing.packed_tokens(
            attention_mask, response_start, packing.prompt_groups(input_ids, attention_mask, response_start)
        )
        <= (1 - packing.MIN_PADDING_SHARE) * attention_mask.numel()
        and packing.contiguous_rows(attention_mask)
        and packing.supports_packing(model)
    )


def _packed_or_padded(
    model, input_ids, attention_mask, response_start, temperature, return_logits, value_head
):
    """The packed forward; the first time for a model, checked against the padded one (a model whose
    attention ignores the row boundaries is then run padded from here on)."""
    from rlhf import packing

    args = (model, input_ids, attention_mask, response_start, temperature, return_logits, value_head)
    try:
        packed = _packed_response_logprobs(*args)
    except packing.PackingUnsupported:
        packing.set_packing_verdict(model, False)
        return _padded_response_logprobs(*args)
    if getattr(model, "_rlhf_packing", None) is None:
        with torch.no_grad():
            padded = _padded_response_logprobs(*args)
        valid = attention_mask[:, response_start:].bool()
        tolerance = 1e-3 if packed[0].dtype == torch.float32 else 5e-2
        same = all(
            torch.allclose(a[valid].float(), b[valid].float(), atol=tolerance, rtol=tolerance)
            for a, b in zip(packed, padded, strict=True)
            if a is not None
        )
        packing.set_packing_verdict(model, same)
        if not same:
            return _padded_response_logprobs(*args)
    return packed


def _packed_response_logprobs(model, input_ids, attention_mask, response_start, temperature, return_logits,
                              value_head):  # fmt: skip
    """`response_logprobs` on the real tokens only (`rlhf.packing`); padding positions get 0."""
    from rlhf.packing import pack, pack_shared_prompts, packed_forward, prompt_groups

    rows = prompt_groups(input_ids, attention_mask, response_start)
    groups = None
    if len(rows) < len(input_ids):  # K samples of a prompt: the prompt once, all K responses attending to it
        packed, groups = pack_shared_prompts(input_ids, attention_mask, response_start, rows)
    else:
        packed = pack(input_ids, attention_mask)
    valid = attention_mask[:, response_start:].bool()  # (B, T)
    keep = packed.flat_index[:, response_start - 1 : -1][valid]  # (K,): the positions predicting each token
    kwargs = {"logits_to_keep": keep} if accepts_logits_to_keep(model) else {}
    out = packed_forward(model, packed, keep, value_head is not None, groups, **kwargs)
    logits = out.logits[0] if kwargs else out.logits[0, keep]  # (K, V)
    if temperature != 1.0:
        logits = logits / temperature
    picked = gather_logprobs(logits[None], input_ids[:, response_start:][valid][None])[0]  # (K,)
    logprobs = picked.new_zeros(valid.shape)
    logprobs[valid] = picked
    full_logits = None
    if return_logits:
        full_logits = logits.new_zeros((*valid.shape, logits.shape[-1]))
        full_logits[valid] = logits
    if value_head is None:
        return logprobs, full_logits
    hidden = out.hidden_states[-1][0, keep]  # (K, D)
    picked_values = value_head(hidden.to(next(value_head.parameters()).dtype)).squeeze(-1)  # (K,)
    values = picked_values.new_zeros(valid.shape)
    values[valid] = picked_values
    return logprobs, full_logits, values


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... from each row's first real token, 0 on left padding; (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether `model.forward` takes `logits_to_keep` (transformers' causal LMs since 4.50)."""
    import inspect

    inner = getattr(model, "module", None)  # DistributedDataParallel passes keywords through
    forward = getattr(model, "forward", None)
    if forward is None:  # a wrapper such as AdaptersDisabled: ask what it wraps
        inner = getattr(model, "model", None)
    if inner is not None:
        return accepts_logits_to_keep(inner)
    try:
        return "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row, T when there is none; (B, T) bool -> (B,) long."""
    T = bools.shape[-1]
    positions = torch.arange(T, device=bools.device)  # (T,)
    return torch.where(bools, positions, T).amin(dim=-1)


def truncate_after_eos(
    tokens: torch.Tensor, eos_id: int, pad_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace everything after the first EOS of each row by padding; tokens (B, T) -> (B, T), mask (B, T).

    The mask is True up to and including the first EOS (the EOS is an action the policy took and is
    scored), False after it; a row without EOS is all True. ``pad_id`` defaults to ``eos_id``.
    """
    pad_id = eos_id if pad_id is None else pad_id
    eos_at = first_true_indices(tokens == eos_id)  # (B,)
    positions = torch.arange(tokens.shape[1], device=tokens.device)  # (T,)
    mask = positions[None, :] <= eos_at[:, None]  # (B, T)
    return torch.where(mask, tokens, pad_id), mask


def sequence_logprob(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y | x) = sum of the valid tokens' log-probs; logprobs, mask (B, T) -> (B,).

    ``torch.where`` rather than a product, so garbage (even -inf) at padding cannot leak into the sum.
    """
    return torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs)).sum(dim=-1)
