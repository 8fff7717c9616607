"""Padding-free forwards: a batch of padded rows run as one packed sequence.

A PPO batch is left-padded prompts followed by responses that stop at EOS and are right-padded to the
longest one. On the benchmark batch (32 prompts of about 44 tokens, responses of 13 tokens on average
and up to 32) a third of the positions are padding, and every matrix multiply of the forward and the
backward pays for them. Packing keeps only the real tokens: the rows' tokens are laid end to end in one
(1, N) sequence, each row's positions restart at 0, and attention runs causally inside each row
(`packed_attention`, given the rows' boundaries through transformers' varlen keyword `cu_seq_lens_q`).
The linear layers then see N real tokens and nothing else; the results are the padded forward's
(tested to float tolerance), scattered back to the padded layout.

When rows share a prompt (K samples of it, RLOO and GRPO), the packed row holds each prompt once,
followed by its K responses, each positioned after the prompt and attending to all of it
(`pack_shared_prompts`): the prompt's hidden states are the same in every row, so this gives the same
log-probs and gradients while the blocks see a prompt of ~44 tokens once instead of K times (on the
benchmark's 8 x 4 batch, 1,376 tokens instead of 2,458).

A reward model scores whole texts, the K responses to a prompt each behind a copy of it: `pack_token_groups`
lays out such token rows with their common prefix once (`rlhf.reward_model.member_scores`).

Used by `rlhf.logprobs.response_logprobs` and the reward model's scoring for models whose attention goes through transformers'
attention interface (`_supports_attention_backend`: Llama, Qwen, Mistral, GPT-2, GPT-NeoX, ...). The
first packed forward of each model is checked against the padded one; a model that does not pass the
varlen keywords through to its attention falls back to padded rows for good.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION_NAME = "rlhf_packed"
MIN_PADDING_SHARE = 0.15  # below this, the packed attention's per-row calls cost more than they save
# the layout of a packed row whose groups share their prompt (`pack_shared_prompts`), for the attention
_shared_prompts: ContextVar[list[tuple[int, list[int]]] | None] = ContextVar("shared_prompts", default=None)


def packed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention inside each packed row (transformers' attention-interface signature).
    query (1, H, N, Dh), key and value (1, Hkv, N, Dh), cu_seq_lens_q (R + 1,) row boundaries
    -> (1, N, H, Dh)."""
    if cu_seq_lens_q is None:
        raise PackingUnsupported("the model did not pass cu_seq_lens_q to its attention")
    lengths = cu_seq_lens_q.diff().tolist()
    gqa = key.shape[1] != query.shape[1]
    groups = _shared_prompts.get()
    if groups is not None:
        return _shared_prompt_attention(query, key, value, groups, lengths, scaling, gqa), None
    # split, not slicing: the backward of R slices would write R full-size zero gradients, one cat here
    rows = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True)
    ]  # fmt: skip
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


def _shared_prompt_attention(query, key, value, groups, lengths, scaling, gqa) -> torch.Tensor:
    """Attention over `pack_shared_prompts`' layout: each prompt causally within itself, each of its
    responses over the whole prompt and causally within itself. The prompt's keys and values enter every
    response's call, so their gradients add up over the group, as the repeated prompts' would.
    query (1, H, N, Dh), key and value (1, Hkv, N, Dh) -> (1, N, H, Dh)."""
    qs, ks, vs = query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2)
    sdpa = partial(F.scaled_dot_product_attention, scale=scaling, enable_gqa=gqa)
    out, i = [], 0
    for prompt, responses in groups:
        out.append(sdpa(qs[i], ks[i], vs[i], is_causal=True))
        for j, n in enumerate(responses, i + 1):
            if n == 0:
                out.append(qs[j])  # an empty response: nothing to attend from
                continue
            sees = torch.ones(n, prompt + n, dtype=torch.bool, device=query.device).tril(prompt)  # (n, P + n)
            out.append(
                sdpa(qs[j], torch.cat([ks[i], ks[j]], 2), torch.cat([vs[i], vs[j]], 2), attn_mask=sees)
            )
        i += 1 + len(responses)
    return torch.cat(out, dim=2).transpose(1, 2).contiguous()


class PackingUnsupported(RuntimeError):
    """The model's forward does not run through `packed_attention` with row boundaries."""


_registered = False


def register_attention() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, packed_attention)
        _registered = True


@dataclass
class Packed:
    """A padded (B, L) batch as one packed row: `input_ids` and `position_ids` (1, N), the rows'
    boundaries `cu_seq_lens` (B + 1,), and `flat_index` (B, L): each padded position's index in the
    packed row (-1 on padding)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seq_lens: torch.Tensor
    max_length: int
    flat_index: torch.Tensor


def contiguous_rows(attention_mask: torch.Tensor) -> bool:
    """Whether every row's real tokens are one run (left and right padding only); (B, L) -> bool."""
    mask = attention_mask.bool()
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum(-1) + mask[:, 0].long()  # runs of 1s per row
    return bool((starts <= 1).all()) and bool(mask.any(-1).all())


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Packed:
    """Lay the real tokens of each row end to end. Rows must be contiguous (`contiguous_rows`)."""
    mask = attention_mask.bool()  # (B, L)
    lengths = mask.sum(-1)  # (B,)
    flat_index = torch.where(mask, mask.reshape(-1).long().cumsum(0).view_as(mask) - 1, -1)  # (B, L)
    positions = (mask.long().cumsum(-1) - 1)[mask]  # (N,): 0, 1, ... within each row
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=input_ids.device)
    cu[1:] = lengths.cumsum(0)
    return Packed(input_ids[mask][None], positions[None], cu, int(lengths.max()), flat_index)


def prompt_groups(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
) -> list[list[int]]:
    """The rows that share a prompt (the same ids and mask before `response_start`), as lists of row
    indices in order of first appearance: K samples of one prompt (RLOO, GRPO) form a group wherever
    the update's shuffling put them; every row is its own group when no prompt repeats."""
    mask = attention_mask[:, :response_start].bool()
    prompts = torch.where(mask, input_ids[:, :response_start], -1)  # (B, Lq)
    _, inverse = torch.unique(prompts, dim=0, return_inverse=True)  # (B,) each row's prompt
    groups: dict[int, list[int]] = {}
    for row, key in enumerate(inverse.tolist()):
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def pack_shared_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, rows: list[list[int]]
) -> tuple[Packed, list[tuple[int, list[int]]]]:
    """Like `pack`, but each group of rows with one prompt (`prompt_groups`) holds its prompt once,
    followed by its rows' responses, each positioned right after the prompt. Returns the packed row
    (`flat_index` maps every row's prompt positions to the shared ones) and the layout, a (prompt length,
    [response lengths]) per group, for `packed_attention`.

    With K samples per prompt (RLOO, GRPO) the padded and the plainly packed forwards run each prompt K
    times; the prompt's hidden states are the same in all K rows, so one copy attended to by all K
    responses gives the same log-probs, and the same gradients (its K uses add up)."""
    device = input_ids.device
    mask = attention_mask.bool()  # (B, L)
    flat_index = torch.full(mask.shape, -1, dtype=torch.long, device=device)
    ids, positions, segments, groups = [], [], [], []
    n = 0
    for group in rows:
        prompt_cols = mask[group[0], :response_start].nonzero().squeeze(-1)
        p = len(prompt_cols)
        flat_index[torch.tensor(group, device=device)[:, None], prompt_cols] = torch.arange(
            n, n + p, device=device
        )
        ids.append(input_ids[group[0], prompt_cols])
        positions.append(torch.arange(p, device=device))
        n += p
        responses = []
        for b in group:
            cols = response_start + mask[b, response_start:].nonzero().squeeze(-1)
            r = len(cols)
            flat_index[b, cols] = torch.arange(n, n + r, device=device)
            ids.append(input_ids[b, cols])
            positions.append(torch.arange(p, p + r, device=device))
            responses.append(r)
            n += r
        segments.extend([p, *responses])
        groups.append((p, responses))
    cu = torch.zeros(len(segments) + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.tensor(segments, device=device).cumsum(0)
    packed = Packed(torch.cat(ids)[None], torch.cat(positions)[None], cu,
                    max(p + max(r, default=0) for p, r in groups), flat_index)  # fmt: skip
    return packed, groups


def pack_token_groups(
    rows: list[list[int]], groups: list[list[int]], device: torch.device | str = "cpu"
) -> tuple[Packed, list[tuple[int, list[int]]]]:
    """Unpadded token rows (a reward model's scored texts) packed with each group's common prefix once:
    the group's rows share their first p tokens (p: the longest common prefix, at most the shortest row
    less one, so every row keeps a token of its own), and each row's remaining tokens follow it,
    positioned after it and attending to it (the layout of `pack_shared_prompts`). A group of one row
    is its row, split after its last-but-one token. `groups` lists row indices, every row once, in any
    order. Returns the packed row, whose `flat_index` (B, max row length) maps each row's positions to
    packed ones (-1 past its end), and the layout for `packed_attention`.

    The prefix is found on the tokens, not on the prompt strings: a tokenizer may merge the prompt's
    last characters with the response's first, and a row cut from the left to the context length no
    longer starts like its group's others; either way only the tokens that really are common are
    shared, so the hidden states are those of the rows run one by one."""
    width = max(len(row) for row in rows)
    flat_index = torch.full((len(rows), width), -1, dtype=torch.long)
    ids: list[int] = []
    positions: list[int] = []
    segments: list[int] = []
    layout = []
    for group in groups:
        members = [rows[b] for b in group]
        limit = min(len(row) for row in members) - 1
        p = 0
        while p < limit and all(row[p] == members[0][p] for row in members[1:]):
            p += 1
        n = len(ids)
        flat_index[group, :p] = torch.arange(n, n + p)
        ids.extend(members[0][:p])
        positions.extend(range(p))
        responses = []
        for b, row in zip(group, members, strict=True):
            n, r = len(ids), len(row) - p
            flat_index[b, p : len(row)] = torch.arange(n, n + r)
            ids.extend(row[p:])
            positions.extend(range(p, len(row)))
            responses.append(r)
        segments.extend([p, *responses])
        layout.append((p, responses))
    cu = torch.zeros(len(segments) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(segments).cumsum(0)
    packed = Packed(
        torch.tensor(ids, device=device)[None], torch.tensor(positions, device=device)[None],
        cu.to(device), max(p + max(r) for p, r in layout), flat_index.to(device),
    )  # fmt: skip
    return packed, layout


def packed_tokens(attention_mask: torch.Tensor, response_start: int, rows: list[list[int]]) -> int:
    """Tokens of the packed row: every row's real tokens, less the repeated copies of shared prompts."""
    prompt = attention_mask[:, :response_start].sum(-1).tolist()  # (B,)
    return int(attention_mask.sum()) - sum((len(group) - 1) * prompt[group[0]] for group in rows)


def shared_layout(
    attention_mask: torch.Tensor, response_start: int, rows: list[list[int]]
) -> list[tuple[int, list[int]]]:
    """`pack_shared_prompts`' layout without the packing: (prompt length, [response lengths]) per group."""
    prompt = attention_mask[:, :response_start].sum(-1).tolist()  # (B,)
    response = attention_mask[:, response_start:].sum(-1).tolist()  # (B,)
    return [(prompt[group[0]], [response[b] for b in group]) for group in rows]


def modules_of(model: Any):
    """The modules of `model`, or of the module a plain wrapper holds as `.model` (`AdaptersDisabled`)."""
    while not isinstance(model, torch.nn.Module) and hasattr(model, "model"):
        model = model.model
    return model.modules()


def padding_share(attention_mask: torch.Tensor) -> float:
    return 1.0 - float(attention_mask.float().mean())


@contextmanager
def attention_implementation(model: Any, name: str):
    """Temporarily route every config of `model` (and its wrappers' inner models) to attention `name`."""
    from transformers import PretrainedConfig

    configs = {}
    for module in modules_of(model):
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            configs[id(config)] = config
    previous = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = name
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = previous[key]


def supports_packing(model: Any) -> bool:
    """Whether `model` may be run packed: its transformers model routes attention through the attention
    interface, and a first packed forward has not been found to differ from the padded one."""
    verdict = getattr(model, "_rlhf_packing", None)
    if verdict is not None:
        return verdict
    from transformers import PreTrainedModel

    inner = [m for m in modules_of(model) if isinstance(m, PreTrainedModel)]
    return bool(inner) and all(getattr(type(m), "_supports_attention_backend", False) for m in inner)


def set_packing_verdict(model: Any, ok: bool) -> None:
    model._rlhf_packing = ok


@contextmanager
def no_padding_check(model: Any):
    """Skip transformers' "We strongly recommend passing in an `attention_mask`" check: it fires when a
    row's first or last token is the pad id, and a packed row, unpadded and without a mask by design, ends
    with a response's EOS: the pad token of GPT-2-style tokenizers, which have none. (Filtering the
    message instead would use up transformers' warn-once for the forwards that do need it.)"""
    from transformers import PreTrainedModel

    inner = [m for m in modules_of(model) if isinstance(m, PreTrainedModel)]
    for module in inner:
        module.warn_if_padding_and_no_attention_mask = _no_check
    try:
        yield
    finally:
        for module in inner:
            del module.warn_if_padding_and_no_attention_mask


def _no_check(*args: Any) -> None:
    return None


def packed_forward(
    model: Any,
    packed: Packed,
    keep: torch.Tensor,
    output_hidden_states: bool,
    groups: list[tuple[int, list[int]]] | None = None,
    **kwargs,
):
    """One forward of `model` over the packed row, with LM-head logits at the packed positions `keep`
    (1-D) only when the model takes `logits_to_keep`; `groups`: the layout of `pack_shared_prompts`."""
    register_attention()
    token = _shared_prompts.set(groups)
    with attention_implementation(model, ATTENTION_NAME), no_padding_check(model):
        try:
            return model(
                input_ids=packed.input_ids,
                position_ids=packed.position_ids,
                attention_mask=None,
                use_cache=False,
                output_hidden_states=output_hidden_states,
                cu_seq_lens_q=packed.cu_seq_lens,
                cu_seq_lens_k=packed.cu_seq_lens,
                max_length_q=packed.max_length,
                max_length_k=packed.max_length,
                **kwargs,
            )
        finally:
            _shared_prompts.reset(token)
