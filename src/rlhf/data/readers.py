"""Rows out of files, and text out of chat messages: the input side of `rlhf.data`.

`iter_rows` reads JSONL, Parquet and `datasets` folders (saved with `save_to_disk`) as plain dicts, each
with where it came from; `choose_split` picks the split of a saved `DatasetDict` (training data reads
`train`, evaluation data `test`, else `validation`). `render_prompt` / `render_response` turn `{"role", "content"}` message lists into
the text a reward model or policy sees: through the tokenizer's chat template when it has one, else in
the bundled world's plain "User: ...\\nAssistant: ..." format.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.errors import UserError
from rlhf.io import iter_jsonl

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
# The names `datasets` users give held-out data, in the order evaluation data looks for them.
EVAL_SPLITS = ("test", "validation")


class RowError(ValueError):
    """One row is invalid; the message names the field, the loader adds the file and line."""


@dataclass(frozen=True)
class Row:
    where: str  # for messages: "data/pairs.jsonl line 7", "data/pairs.parquet row 12"
    source: str  # for records: "pairs.jsonl:7", "pairs.parquet:row 12"
    data: dict[str, Any]


def iter_rows(path: str | Path, split: str | None = None) -> Iterator[Row]:
    """Every row of a JSONL file, a Parquet file or a `datasets` folder (`split` picks a DatasetDict split).

    JSONL lines are numbered from 1 (blank lines skipped but counted), Parquet and datasets rows from 0.
    JSON that does not parse stops the read: the file is damaged, which is not a bad row to skip.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_dir():
        yield from _dataset_rows(path, split)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        for number, data in iter_jsonl(path):
            yield Row(f"{path} line {number}", f"{path.name}:{number}", data)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_rows(path)
    else:
        raise UserError(
            f"{path}: unknown file type {path.suffix!r}; expected .jsonl, .json (JSON lines), .parquet "
            "or a folder saved with datasets' save_to_disk"
        )


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        # Batches keep memory flat on large files; to_pylist gives nested messages as lists of dicts.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for data in batch.to_pylist():
                yield Row(f"{path} row {index}", f"{path.name}:row {index}", data)
                index += 1
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path} is not a readable Parquet file ({exc})") from exc


def choose_split(path: str | Path, split: str | None = None, purpose: str = "train") -> str | None:
    """The split of the `DatasetDict` saved at `path` to read: `split` when given, else "train" (or the
    only split there is; a warning names it when there are others) for training data and, for evaluation data (`purpose="eval"`), "test", then "validation", or the only
    split there is, so that held-out figures are never measured on the training split by default.

    None when `path` is a file or a plain `Dataset` (nothing to choose; naming a split for one is an
    error). An unknown or missing split is a `UserError` listing the splits there are.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist")
    return _pick_split(path, _load_dataset(path) if path.is_dir() else None, split, purpose)


_ANNOUNCED: set[tuple[str, str]] = set()  # (path, split) read by default and said so, once per process


def _pick_split(path: Path, loaded: Any, split: str | None, purpose: str) -> str | None:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):  # a file, or a Dataset without splits
        if split:
            raise UserError(f"{path} is not a saved DatasetDict, so it has no split {split!r} to read")
        return None
    names = list(loaded)
    if split:
        if split not in names:
            raise UserError(f"{path} has no split {split!r}; it has: {', '.join(names)}")
        return split
    if purpose != "eval":
        if "train" not in names and len(names) != 1:
            raise UserError(
                f"{path} has no split 'train' to read; it has: {', '.join(names)} (give one split's own "
                f"folder, e.g. {path / names[0]})"
            )
        split = "train" if "train" in names else names[0]
        if len(names) > 1 and (str(path), split) not in _ANNOUNCED:
            _ANNOUNCED.add((str(path), split))
            warnings.warn(f"{path}: reading its {split!r} split (it has {', '.join(names)})", stacklevel=2)
        return split
    found = [name for name in EVAL_SPLITS if name in names] or (names if len(names) == 1 else [])
    if not found:
        raise UserError(
            f"{path} has no split 'test' or 'validation' to evaluate on; it has: {', '.join(names)}; "
            "name one with --eval-split (rlhf reward eval: --split)"
        )
    return found[0]


def _load_dataset(path: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(
            f"{path} is a folder but not a dataset saved with datasets' save_to_disk ({exc})"
        ) from exc


def _dataset_rows(path: Path, split: str | None) -> Iterator[Row]:
    loaded = _load_dataset(path)
    # A DatasetDict reads `split` (default "train"); a plain Dataset has no splits to choose from.
    name = _pick_split(path, loaded, split, "train")
    for index, data in enumerate(loaded[name] if name else loaded):
        yield Row(f"{path} row {index}", f"{path.name}:row {index}", dict(data))


# ----------------------------------------------------------------------------- chat messages


def is_messages(value: Any) -> bool:
    """True for a list (the conversational form); the list's contents are checked by `check_messages`."""
    return isinstance(value, list)


def check_messages(value: Any, field: str) -> list[dict[str, Any]]:
    """The messages of `field` with null keys dropped (Parquet fills absent keys with null), or `RowError`."""
    if not isinstance(value, list) or not value:
        raise RowError(f"field {field!r} must be a non-empty list of {{role, content}} messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(f"field {field!r} message {i} must be an object, got {type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = "missing" if message.get(key) is None else type(message[key]).__name__
                raise RowError(f"field {field!r} message {i}: {key!r} must be a string, got {got}")
        messages.append({k: v for k, v in message.items() if v is not None})
    return messages


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(messages: list[dict[str, Any]], tokenizer: Any = None) -> str:
    """The prompt text of a conversation, ending where the assistant's reply starts."""
    if has_chat_template(tokenizer):
        return _apply_template(tokenizer, messages, add_generation_prompt=True)
    return _plain(messages) + "Assistant:"


def render_response(
    prompt_messages: list[dict[str, Any]],
    response_messages: list[dict[str, Any]],
    tokenizer: Any,
    prompt_text: str,
    field: str,
) -> str:
    """The response text: the rendering of prompt + response minus `prompt_text`, without the template's
    end-of-turn text and EOS: the reply as written (`rlhf.sequences.scored_text` puts the end-of-turn
    back for the reward model, so it reads what `apply_chat_template` renders). The response must start
    with an assistant message.
    """
    if response_messages[0]["role"] != "assistant":
        raise RowError(
            f"field {field!r} must start with an assistant message, got role {response_messages[0]['role']!r}"
        )
    if not has_chat_template(tokenizer):
        first, rest = response_messages[0], response_messages[1:]
        return (first["content"] + "\n" + _plain(rest)).rstrip()
    full = _apply_template(tokenizer, prompt_messages + response_messages, add_generation_prompt=False)
    if not full.startswith(prompt_text):
        raise RowError(
            f"field {field!r}: the chat template's rendering of prompt + {field} does not start with its "
            "rendering of the prompt (with add_generation_prompt=True), so the response cannot be cut out"
        )
    from rlhf.sequences import strip_end_of_turn

    return strip_end_of_turn(tokenizer, full[len(prompt_text) :])


def _plain(messages: list[dict[str, Any]]) -> str:
    """The world's own dialogue format, used when there is no chat template."""
    lines = []
    for m in messages:
        if m["role"] == "user":
            lines.append(f"User: {m['content']}\n")
        elif m["role"] == "assistant":
            lines.append(f"Assistant: {m['content']}\n")
        else:
            lines.append(f"{m['content']}\n")
    return "".join(lines)


def _apply_template(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        raise RowError(f"the chat template failed on this conversation ({exc})") from exc
    return text
