"""The sequence contract: how a prompt and a response become token ids, decided here and nowhere else.

Every trainer (reward model, DPO, ILQL, PPO / RLOO / GRPO), the samplers and the evaluation build their
token ids with these functions; docs/sequences.md states the contract and the model families it is tested
on (tests/test_sequences.py and tests/test_families_matrix.py hold it against plain transformers).

- **Prompt** (`encode_prompt`): a chat prompt (rendered by the chat template) is exactly the template's
  tokens, as `apply_chat_template(..., tokenize=True)` gives them: the template decides the BOS. A
  plain-text prompt gets the tokenizer's BOS first when the tokenizer adds one. Either way at most one
  BOS, and never an EOS, even from a tokenizer that appends one to every input.
- **Response** (`encode_response`): the tokens `generate` would emit after the prompt's tokens to write
  the response text, then exactly one EOS: the tail of the joint encoding of `join_prompt_response(prompt,
  response)` when the prompt's tokens are its prefix (so SentencePiece's dummy prefix and byte-level BPE's
  leading-space tokens come out as in running text), else the continuation encoded in context. A trailing
  EOS string in the data is dropped; one inside the response is an error (a policy stops there).
- **Scored text** (`scored_text`, `encode_scored`): what a reward model reads is what plain transformers
  users score: for a chat prompt, the chat template's rendering of the whole conversation (the reply
  followed by the template's end-of-turn text), tokenized as `apply_chat_template(prompt + [reply],
  tokenize=True)` does; otherwise the joined text, tokenized as `tokenizer(text)` does (the tokenizer's
  own BOS / EOS, a duplicated BOS collapsed). It is read at the last token that is not the pad id,
  transformers' pooling rule.
- **Length** (`context_length`, `truncate_left`): the model's context length comes from its config;
  prompts and scored texts are cut from the left (their end is what matters), keeping a leading BOS;
  responses from the right.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.data.records import join_prompt_response
from rlhf.errors import UserError

# config keys that hold the number of positions a model was built for, by model family
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_PROBE = "a"
_ANCHOR = "\n"  # a text whose tokens no continuation merges into, for encoding a continuation in context


@dataclass(frozen=True)
class SpecialTokens:
    """What a tokenizer does with special tokens on its own (`tokenizer(text)`), found by encoding a probe."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    adds_bos: bool  # tokenizer(text) starts with BOS
    appends_eos: bool  # tokenizer(text) ends with EOS


@dataclass(frozen=True)
class ChatMarkers:
    """The strings a chat template puts around an assistant reply: `generation_prompt` ends a prompt
    rendered with add_generation_prompt=True, `end_of_turn` follows the reply's content."""

    generation_prompt: str
    end_of_turn: str


_special_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_chat_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(cache: weakref.WeakKeyDictionary, tokenizer: Any, compute):
    """`compute(tokenizer)`, remembered per tokenizer for as long as its special tokens and chat template
    stay as they were (a caller may set `tokenizer.eos_token` or `chat_template` later)."""
    state = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        getattr(tokenizer, "chat_template", None),
    )
    try:
        seen, value = cache[tokenizer]
        if seen == state:
            return value
    except (KeyError, TypeError):
        pass
    value = compute(tokenizer)
    try:
        cache[tokenizer] = (state, value)
    except TypeError:  # a tokenizer that cannot be weakly referenced: computed each time
        pass
    return value


def special_tokens(tokenizer: Any) -> SpecialTokens:
    """The tokenizer's BOS / EOS / pad ids and whether `tokenizer(text)` adds BOS or appends EOS."""
    return _cached(_special_cache, tokenizer, _find_special_tokens)


def _find_special_tokens(tokenizer: Any) -> SpecialTokens:
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return SpecialTokens(
        bos_id=bos,
        eos_id=eos,
        pad_id=tokenizer.pad_token_id,
        adds_bos=bos is not None and bool(full) and full[0] == bos and (not plain or plain[0] != bos),
        appends_eos=eos is not None and bool(full) and full[-1] == eos and (not plain or plain[-1] != eos),
    )


def chat_markers(tokenizer: Any) -> ChatMarkers | None:
    """The chat template's generation prompt and end-of-turn text, or None without a template (or with
    one that has no separate generation prompt, like the bundled world's)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    return _cached(_chat_cache, tokenizer, _find_chat_markers)


def _find_chat_markers(tokenizer: Any) -> ChatMarkers | None:
    from jinja2 import TemplateError

    user = [{"role": "user", "content": "\x01"}]
    reply = "\x02\x03"
    try:
        without = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
        with_prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": reply}], tokenize=False, add_generation_prompt=False
        )
    except (TemplateError, ValueError, TypeError, KeyError):
        return None
    if not with_prompt.startswith(without) or with_prompt == without or reply not in full:
        return None
    return ChatMarkers(with_prompt[len(without) :], full.rsplit(reply, 1)[1])


def is_chat_prompt(tokenizer: Any, prompt: str) -> bool:
    """Whether `prompt` was rendered by the tokenizer's chat template (it ends with the generation prompt)."""
    markers = chat_markers(tokenizer)
    return markers is not None and prompt.endswith(markers.generation_prompt)


def is_chat_text(tokenizer: Any, text: str) -> bool:
    """Whether `text` is a whole conversation rendered by the chat template (a `scored_text` of a chat
    prompt): it holds the generation prompt and ends with the end-of-turn text."""
    markers = chat_markers(tokenizer)
    return (
        markers is not None
        and bool(markers.end_of_turn.strip())
        and markers.generation_prompt in text
        and text.endswith(markers.end_of_turn)
    )


def strip_end_of_turn(tokenizer: Any, text: str) -> str:
    """`text` without the chat template's end-of-turn text and EOS strings at its end: the reply as its
    author wrote it (its own whitespace kept, so that `scored_text` renders it as the template does)."""
    markers = chat_markers(tokenizer)
    end = markers.end_of_turn if markers is not None else ""
    if end.strip() and text.endswith(end):
        text = text[: -len(end)]
    elif end.strip() and text.rstrip().endswith(end.rstrip()):  # the template's trailing newline trimmed
        text = text.rstrip()[: -len(end.rstrip())]
    return strip_eos_text(tokenizer, text)


# ----------------------------------------------------------------------------- policy sequences


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """`ids` with BOS first when the tokenizer adds one and it is not there yet (exactly one BOS)."""
    special = special_tokens(tokenizer)
    if special.adds_bos and (not ids or ids[0] != special.bos_id):
        return [special.bos_id, *ids]
    return ids


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's token ids as the policy sees them: a chat prompt as the template wrote it, a plain
    one with BOS as the tokenizer adds it (once); never EOS."""
    return _encode(tokenizer, prompt, add_bos=not is_chat_prompt(tokenizer, prompt))


def _encode(tokenizer: Any, text: str, add_bos: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return with_bos(tokenizer, ids) if add_bos else ids


def require_eos(tokenizer: Any) -> int:
    """The tokenizer's EOS id; UserError when it has none (a response could never end)."""
    if tokenizer.eos_token_id is None:
        raise UserError(
            "the tokenizer has no EOS token, so a response cannot end: set tokenizer.eos_token (the token "
            "the model ends a reply with) and save the tokenizer again"
        )
    return tokenizer.eos_token_id


def strip_eos_text(tokenizer: Any, response: str) -> str:
    """The response without EOS strings at its end (data often ends responses with the EOS string),
    and without the whitespace after them; whitespace before them is the response's own."""
    eos = getattr(tokenizer, "eos_token", None)
    text = response
    while eos and text.rstrip().endswith(eos):
        text = text.rstrip()[: -len(eos)]
    return text


def encode_response(
    tokenizer: Any, prompt: str, response: str, prompt_ids: list[int] | None = None
) -> list[int]:
    """The tokens a policy emits after `encode_prompt(prompt)` to say `response`, ending with one EOS.

    Raises UserError when the tokenizer has no EOS token, or the response holds the EOS string before its
    end (a policy stops there).
    """
    eos = require_eos(tokenizer)
    if prompt_ids is None:
        prompt_ids = encode_prompt(tokenizer, prompt)
    text = strip_eos_text(tokenizer, response)
    joint = _encode(tokenizer, join_prompt_response(prompt, text), not is_chat_prompt(tokenizer, prompt))
    if joint[: len(prompt_ids)] == prompt_ids:
        tail = joint[len(prompt_ids) :]
    else:  # the prompt's last token merges with the response's first: encode the continuation alone
        tail = _encode_in_context(tokenizer, join_prompt_response(prompt, text)[len(prompt) :])
    if eos in tail:
        raise UserError(
            f"a response holds the EOS token {tokenizer.eos_token!r} before its end ({text[:40]!r}...): a "
            "policy stops at EOS, so it could never say the rest (a reply of several messages, or the EOS "
            "string in the text); DPO and ILQL train on one assistant reply"
        )
    return [*tail, eos]


def encode_row(
    tokenizer: Any, prompt: str, responses: list[str], source: str
) -> tuple[list[int], list[list[int]]]:
    """A data row's prompt ids and each response's ids (`encode_prompt`, `encode_response`); a response
    that cannot be a policy's is a UserError naming `source` (the file and line)."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    try:
        return prompt_ids, [encode_response(tokenizer, prompt, r, prompt_ids) for r in responses]
    except UserError as exc:
        raise UserError(f"{source}: {exc}" if source else str(exc)) from exc


def _encode_in_context(tokenizer: Any, continuation: str) -> list[int]:
    """Tokens of text that continues other text: encoded after an anchor whose tokens are then dropped, so
    a SentencePiece dummy prefix is not added to it."""
    anchor = tokenizer(_ANCHOR, add_special_tokens=False)["input_ids"]
    both = tokenizer(_ANCHOR + continuation, add_special_tokens=False)["input_ids"]
    if both[: len(anchor)] == anchor:
        return both[len(anchor) :]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]


def truncate_left(ids: list[int], max_length: int, bos_id: int | None = None) -> list[int]:
    """The last `max_length` tokens of `ids`, keeping a leading `bos_id` in front of them."""
    if len(ids) <= max_length:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id and max_length > 1:
        return [bos_id, *ids[len(ids) - max_length + 1 :]]
    return ids[len(ids) - max_length :]


def fit_length(prompt: list[int], response: list[int], max_length: int, bos_id: int | None = None):
    """Cut the prompt from the left (its end is what the response follows; a leading BOS stays), then the
    response from the right, until both fit in `max_length`; at least one prompt token is kept.
    Returns (prompt, response)."""
    keep_prompt = max(1, min(len(prompt), max_length - len(response)))
    return truncate_left(prompt, keep_prompt, bos_id), response[: max_length - keep_prompt]


def encode_prompts(
    tokenizer: Any, prompts: list[str], max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompt ids (B, L) and attention mask (B, L) for generation, each prompt cut from the
    left to `max_length` tokens (BOS kept); also how many prompts were cut."""
    special = special_tokens(tokenizer)
    rows = [encode_prompt(tokenizer, p) for p in prompts]
    cut = 0
    if max_length is not None:
        cut = sum(len(r) > max_length for r in rows)
        rows = [truncate_left(r, max_length, special.bos_id if special.adds_bos else None) for r in rows]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return input_ids, mask, cut


def decode_response(tokenizer: Any, ids: list[int]) -> str:
    """The text of generated response tokens (special tokens and surrounding whitespace dropped)."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# ----------------------------------------------------------------------------- reward-model inputs


def scored_text(tokenizer: Any, prompt: str, response: str) -> str:
    """The text a reward model reads for `response` to `prompt`: for a chat prompt the template's whole
    conversation (reply + end-of-turn text, as `apply_chat_template(prompt + [reply])` renders it), else
    `join_prompt_response(prompt, response)`."""
    if is_chat_prompt(tokenizer, prompt):
        return (
            join_prompt_response(prompt, strip_end_of_turn(tokenizer, response))
            + chat_markers(tokenizer).end_of_turn
        )
    return join_prompt_response(prompt, response)


def encode_scored(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of scored texts: a chat conversation as `apply_chat_template(..., tokenize=True)` gives
    them (the template's special tokens only), any other text as `tokenizer(text)` does (its own BOS and
    EOS, a duplicated BOS collapsed); cut from the left to `max_length` (a leading BOS kept) so the end,
    which is scored, stays."""
    if not texts:
        return []
    special = special_tokens(tokenizer)
    bos = special.bos_id if special.adds_bos else None
    out = []
    rows: list[list[int]] = [[] for _ in texts]
    chat = [is_chat_text(tokenizer, text) for text in texts]
    for flag in (True, False):  # one batched call per kind: the scorer tokenizes thousands of texts
        idx = [i for i, c in enumerate(chat) if c == flag]
        if idx:
            encoded = tokenizer([texts[i] for i in idx], add_special_tokens=not flag)["input_ids"]
            for i, row in zip(idx, encoded, strict=True):
                rows[i] = row
    for row in rows:
        if not row:
            raise UserError("an empty prompt and response leave the reward model no token to score")
        if bos is not None and len(row) > 1 and row[0] == bos and row[1] == bos:
            row = row[1:]
        out.append(truncate_left(row, max_length, bos))
    return out


def encode_scored_pairs(
    tokenizer: Any, prompts: list[str], responses: list[str], max_length: int
) -> list[list[int]]:
    """`encode_scored` of the `scored_text` of each (prompt, response)."""
    texts = [scored_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    return encode_scored(tokenizer, texts, max_length)


def score_positions(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The position each row is scored at, transformers' rule for sequence classification: the last
    token that is not the pad id (B, T) -> (B,). With pad = EOS, a trailing EOS is not the scored token."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    if pad_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    return (positions * (input_ids != pad_id)).argmax(-1)


# ----------------------------------------------------------------------------- lengths


def context_length(config: Any) -> int | None:
    """The number of positions the model was built for, from its config (None when it names none)."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def cap_length(requested: int, model: Any) -> int:
    """`requested` capped at the model's context length (`model` a transformers model or its config)."""
    config = getattr(model, "config", model)
    limit = context_length(config)
    return min(requested, limit) if limit else requested
