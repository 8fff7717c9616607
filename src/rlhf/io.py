"""Small file helpers shared by every command: UTF-8 text and JSONL reading (a BOM read through, bad bytes
named by line and column), atomic JSONL/JSON writing, with errors naming file and line."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlhf.errors import UserError


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a directory; expected a file path for the JSONL output")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None: JSON has
    no NaN, so `null` keeps the file valid, as the metrics logger writes it."""
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Write one JSON document (indented) through a temporary file beside `path`, then rename. NaN and
    infinities become null (`finite_or_none`): JSON has no NaN, and strict readers (jq, browsers) refuse it."""
    text = json.dumps(finite_or_none(value), indent=2, allow_nan=False)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Bytes that are not UTF-8 decode to lone surrogates U+DC80..U+DCFF under "surrogateescape"; valid UTF-8
# never produces them, so finding one in a line locates the first bad byte exactly.
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` of a UTF-8 text file; a leading byte-order mark is dropped.

    A line that is not valid UTF-8 raises `UserError` naming the line, the column and the byte.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    # utf-8-sig reads files with or without a BOM (Windows editors write one).
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            bad = None if line.isascii() else _BAD_BYTE.search(line)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                utf16 = number == 1 and line.startswith(("\udcff\udcfe", "\udcfe\udcff"))  # its BOM
                hint = "; the file looks like UTF-16" if utf16 else ""
                raise UserError(
                    f"{path} line {number}: not valid UTF-8 (byte 0x{byte:02x} at column {bad.start() + 1}"
                    f"{hint}); save the file as UTF-8"
                )
            yield number, line


def read_text(path: str | Path) -> str:
    """The whole of a UTF-8 text file (BOM dropped), or `UserError` naming the first line that is not UTF-8."""
    return "".join(line for _, line in iter_text_lines(path))


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for each non-blank line; a bad line raises `UserError` naming it."""
    path = Path(path).expanduser()
    for number, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]
