"""Rows of (prompt, response) to score: reward-model scoring, normalisation sets, logged RL data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.data.readers import RowError, check_messages, iter_rows, render_prompt, render_response
from rlhf.errors import UserError


def read_response_rows(
    path: str | Path, tokenizer: Any = None, split: str | None = None
) -> tuple[list[dict], list[str], list[str]]:
    """Read rows with `prompt` and `response` (plain text, or chat messages rendered like preference data).

    Returns the rows as read (to be written back with scores), and the prompt and response texts.
    """
    rows, prompts, responses = [], [], []
    for row in iter_rows(path, split=split):
        data = row.data
        for name in ("prompt", "response"):
            if name not in data:
                raise UserError(
                    f"{row.where}: missing field '{name}' (expected rows with prompt and response)"
                )
        prompt, response = data["prompt"], data["response"]
        try:
            if isinstance(prompt, list):
                messages = check_messages(prompt, "prompt")
                prompt_text = render_prompt(messages, tokenizer)
                reply = (
                    check_messages(response, "response")
                    if isinstance(response, list)
                    else [{"role": "assistant", "content": str(response)}]
                )
                response_text = render_response(messages, reply, tokenizer, prompt_text, "response")
            elif isinstance(prompt, str) and isinstance(response, str):
                prompt_text, response_text = prompt, response
            else:
                raise RowError("fields 'prompt' and 'response' must be text or chat message lists")
        except RowError as exc:
            raise UserError(f"{row.where}: {exc}") from exc
        rows.append(dict(data))
        prompts.append(prompt_text)
        responses.append(response_text)
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows, prompts, responses
