"""Rows of (prompt, response) to score: reward-model scoring, normalisation sets, logged RL data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.data.readers import RowError, check_messages, iter_rows, render_prompt, render_response
from rlhf.errors import UserError


def _texts(row, tokenizer: Any) -> tuple[str, str]:
    """A row's prompt and response as text: plain strings, or chat messages rendered like preference data."""
    data = row.data
    for name in ("prompt", "response"):
        if name not in data:
            raise RowError(f"missing field '{name}' (expected rows with prompt and response)")
    prompt, response = data["prompt"], data["response"]
    if isinstance(prompt, list):
        messages = check_messages(prompt, "prompt")
        prompt_text = render_prompt(messages, tokenizer)
        reply = (
            check_messages(response, "response")
            if isinstance(response, list)
            else [{"role": "assistant", "content": str(response)}]
        )
        return prompt_text, render_response(messages, reply, tokenizer, prompt_text, "response")
    if isinstance(prompt, str) and isinstance(response, str):
        return prompt, response
    raise RowError("fields 'prompt' and 'response' must be text or chat message lists")


def read_response_rows(
    path: str | Path, tokenizer: Any = None, split: str | None = None
) -> tuple[list[dict], list[str], list[str]]:
    """Read rows with `prompt` and `response` (plain text, or chat messages rendered like preference data).

    Returns the rows as read (to be written back with scores), and the prompt and response texts.
    """
    rows, prompts, responses = [], [], []
    for row in iter_rows(path, split=split):
        try:
            prompt_text, response_text = _texts(row, tokenizer)
            if not (prompt_text + response_text).strip():  # no tokens: a reward model would score padding
                raise RowError("fields 'prompt' and 'response' are both empty: there is nothing to score")
        except RowError as exc:
            raise UserError(f"{row.where}: {exc}") from exc
        rows.append(dict(row.data))
        prompts.append(prompt_text)
        responses.append(response_text)
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows, prompts, responses


@dataclass(frozen=True)
class RewardedResponse:
    """A logged response and its reward: one number for the whole response, or one per response token."""

    prompt: str
    response: str
    reward: float | tuple[float, ...]
    source: str  # "file.jsonl:12"


def load_rewarded_responses(
    path: str | Path,
    tokenizer: Any = None,
    reward_field: str = "reward",
    on_error: str = "stop",
    split: str | None = None,
) -> list[RewardedResponse]:
    """Read offline-RL data: rows with `prompt`, `response` and a reward in `reward_field` (a number, or
    a list of numbers, one per response token). Bad rows stop the read or, with on_error='skip', are
    counted and written to a report file beside the data, as for preference data."""
    from rlhf.data.preferences import _BadRows

    bad = _BadRows(path, on_error, None)
    records, rows_read = [], 0
    for row in iter_rows(path, split=split):
        rows_read += 1
        try:
            prompt, response = _texts(row, tokenizer)
            # an empty prompt leaves nothing to condition the first response token on (as for preferences)
            for name, text in (("prompt", prompt), ("response", response)):
                if not text.strip():
                    raise RowError(f"field {name!r} is empty")
            records.append(RewardedResponse(prompt, response, _reward(row.data, reward_field), row.source))
        except RowError as exc:
            bad.add(row, exc)
    bad.finish(rows_read, len(records))
    return records


def _reward(data: dict[str, Any], field: str) -> float | tuple[float, ...]:
    if field not in data:
        raise RowError(f"missing field '{field}' (the reward: a number, or a list of per-token numbers)")
    value = data[field]
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise RowError(f"field '{field}' must be a number or a non-empty list of numbers; got {value!r}")
    if not all(math.isfinite(v) for v in values):
        raise RowError(f"field '{field}' must be finite; got {value!r}")
    return tuple(float(v) for v in values) if isinstance(value, list) else float(value)


def pretraining_pairs(
    prompts: list[str], responses: list[str], seed: int, groups: list[str] | None = None, tries: int = 20
) -> list[dict[str, str]]:
    """Label-free preference-model pretraining pairs (Askell et al. 2021, section 4): for each dialogue,
    its own response is preferred to the response another dialogue gave to a different prompt.

    With `groups` the other dialogue comes from the same group (e.g. the same task type), a harder
    negative. A dialogue with no usable other one after `tries` draws is left out (counted by the caller:
    len(result) <= len(prompts))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i in range(len(prompts)):
        members.setdefault(groups[i] if groups else "", []).append(i)
    pairs = []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        pool = members[groups[i] if groups else ""]
        for _ in range(tries):
            j = pool[int(rng.integers(len(pool)))]
            if prompts[j] != prompt and responses[j] != response:
                pairs.append({"prompt": prompt, "chosen": response, "rejected": responses[j]})
                break
    return pairs
