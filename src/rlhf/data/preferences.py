"""Load and validate preference data (pairs, K-way rankings, ratings, binary labels) and RL prompt files;
split by prompt.

Every row is checked, and a bad row either stops the load with a message naming file, line and field
(`on_error="stop"`) or is skipped, counted and written to a JSONL report (`on_error="skip"`). Nothing is
dropped silently: `stats["rows_read"] == rows_kept + rows_bad + duplicates_removed`.

Steps of `load_preferences`: (1) read rows from the file, (2) detect the format from the first row that
has a format's fields (or use `kind`), (3) validate each row and render chat messages to text,
(4) drop exact duplicates, (5) turn ratings into pairs within each (prompt, labeller, objective).

Binary rows (`completion` + `label`, TRL's KTO format) are told apart row by row, so they may share a file
with one other format: a reward model can train on comparisons and thumbs up/down in one run.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.data.readers import (
    Row,
    RowError,
    check_messages,
    choose_split,
    is_messages,
    iter_rows,
    render_prompt,
    render_response,
)
from rlhf.data.records import (
    BinaryExample,
    PreferenceData,
    PreferencePair,
    RankingExample,
    join_prompt_response,
    summarize,
)
from rlhf.errors import UserError
from rlhf.io import write_jsonl

KINDS = ("pairs", "rankings", "ratings", "binary")
# The fields that identify a format; the first row that has one set decides the file's format.
KIND_FIELDS = {
    "pairs": ("chosen", "rejected"),
    "rankings": ("responses", "ranking"),
    "ratings": ("response", "rating"),
    "binary": ("completion", "label"),
}
ON_ERROR = ("stop", "skip")


def load_preferences(
    path: str | Path,
    tokenizer: Any = None,
    kind: str | None = None,
    on_error: str = "stop",
    report_path: str | Path | None = None,
    split: str | None = None,
    rating_margin: bool = False,
) -> PreferenceData:
    """Read a pairs, rankings, ratings or binary file (JSONL, Parquet or a `datasets` folder) into records.

    `tokenizer` renders conversational rows through its chat template (else the plain fallback format);
    `kind` forces the format (binary rows are recognised in any file unless another kind is forced); `split` picks a DatasetDict split (default "train"); `rating_margin` sets
    each rating pair's margin to the rating difference. See docs/data.md.
    """
    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown preference kind {kind!r}: expected one of {', '.join(KINDS)}")
    bad = _BadRows(path, on_error, report_path)
    pairs: list[PreferencePair] = []
    rankings: list[RankingExample] = []
    ratings: list[_Rating] = []
    binary: list[BinaryExample] = []
    forced, saw_binary = kind, False
    seen: dict[tuple, Any] = {}
    rows_read = duplicates = 0
    for row in iter_rows(path, split):
        rows_read += 1
        try:
            detected = _detect_kind(row.data)
            # binary rows may sit among one other kind's rows; that kind is fixed by its first row
            # (and a row of no kind in a file of binary rows only is a bad binary row)
            saw_binary = saw_binary or detected == "binary"
            is_binary = forced == "binary" or (
                forced is None and (detected == "binary" or (saw_binary and kind is None and not detected))
            )
            row_kind = "binary" if is_binary else kind or detected
            if row_kind is None:
                raise RowError(
                    "cannot tell the format: expected fields prompt/chosen/rejected (pairs), "
                    "prompt/responses/ranking (rankings), prompt/response/rating (ratings) or "
                    f"prompt/completion/label (binary); found {', '.join(map(repr, row.data)) or 'none'}"
                )
            if not is_binary:
                kind = row_kind
            record = _PARSERS[row_kind](row.data, tokenizer, row.source)
            key = _duplicate_key(record)
            if key in seen:
                _check_agrees(record, seen[key])
                duplicates += 1
                continue
            seen[key] = record
        except RowError as exc:
            bad.add(row, exc)
            continue
        {PreferencePair: pairs, RankingExample: rankings, _Rating: ratings, BinaryExample: binary}[
            type(record)
        ].append(record)
    rows_kept = rows_read - bad.count - duplicates
    bad.finish(rows_read, rows_kept)

    rating_pairs, unpaired = _ratings_to_pairs(ratings, rating_margin)
    stats = {
        "rows_read": rows_read,
        "rows_kept": rows_kept,
        "rows_bad": bad.count,
        "duplicates_removed": duplicates,
        "pairs_from_ratings": len(rating_pairs),
        "ratings_unpaired": unpaired,
    }
    pairs += rating_pairs
    return PreferenceData(pairs, rankings, stats | summarize(pairs, rankings, binary), binary)


def load_eval_preferences(
    data: str | Path, eval_data: str | Path | None, eval_split: str | None, **load: Any
) -> tuple[PreferenceData, str | None]:
    """Evaluation data given apart from the training data `data`: the file `eval_data`, or when only
    `eval_split` is given, that split of `data`. A saved DatasetDict is read at `eval_split`, else at
    "test", then "validation" (`choose_split`). Returns the data and the split read (None for a file);
    `load` goes to `load_preferences`. Evaluating on the training rows themselves is a `UserError`.
    """
    path = eval_data or data
    split = choose_split(path, eval_split, purpose="eval")
    if dataset_identity(path, split) == dataset_identity(data, choose_split(data)):
        where = f"{path} split {split!r}" if split else str(path)
        raise UserError(
            f"the evaluation data is the training data ({where}), so held-out figures would be training "
            "figures; give another --eval-data or --eval-split"
        )
    return load_preferences(path, split=split, **load), split


def load_train_eval(
    data: str | Path,
    eval_data: str | Path | None,
    eval_split: str | None,
    eval_fraction: float,
    seed: int,
    **load: Any,
) -> tuple[PreferenceData, PreferenceData, PreferenceData, str | None]:
    """A trainer's data: (everything read from `data`, train, eval, the split evaluated on). Evaluation
    data is `eval_data` or `eval_split` when given (`load_eval_preferences`; then all of `data` trains),
    else `eval_fraction` of the prompts (`split_by_prompt` with `seed`). `load` goes to `load_preferences`."""
    everything = load_preferences(data, **load)
    if eval_data or eval_split:
        held_out, split = load_eval_preferences(data, eval_data, eval_split, **load)
        return everything, everything, held_out, split
    return everything, *split_by_prompt(everything, eval_fraction, seed), None


def dataset_identity(path: str | Path, split: str | None) -> tuple[Path, str | None]:
    """(folder, split) naming the rows read from `path` at `split`: a split's own folder inside a saved
    DatasetDict (`dd/validation`) is the same rows as `dd` at split "validation"."""
    import json

    resolved = Path(path).expanduser().resolve()
    parent_dict = resolved.parent / "dataset_dict.json"
    if split is None and resolved.is_dir() and parent_dict.is_file():
        try:
            if resolved.name in json.loads(parent_dict.read_text()).get("splits", []):
                return resolved.parent, resolved.name
        except (ValueError, AttributeError):
            pass
    return resolved, split


def load_prompts(
    path: str | Path,
    tokenizer: Any = None,
    field: str = "prompt",
    on_error: str = "stop",
    report_path: str | Path | None = None,
    split: str | None = None,
) -> list[str]:
    """The prompts of a JSONL/Parquet/datasets file, in file order; messages end with the generation prompt.

    Repeated prompts are kept: in RL they are simply sampled more often.
    """
    bad = _BadRows(path, on_error, report_path)
    prompts = []
    rows_read = 0
    for row in iter_rows(path, split):
        rows_read += 1
        try:
            prompts.append(_prompt(_required(row.data, field), tokenizer, field))
        except RowError as exc:
            bad.add(row, exc)
    bad.finish(rows_read, len(prompts))
    return prompts


def split_by_prompt(
    data: PreferenceData, eval_fraction: float, seed: int
) -> tuple[PreferenceData, PreferenceData]:
    """(train, eval): every record goes to the side its prompt hashes to, so no prompt is on both sides.

    A prompt goes to eval when sha256(seed, prompt) / 2^256 < eval_fraction, so its side does not depend
    on the other prompts. If that leaves a side empty, the prompt with the lowest (for eval) or highest
    (for train) hash moves over: with two or more prompts both sides are non-empty.
    """
    if not 0 < eval_fraction < 1:
        raise UserError(f"eval_fraction must be in (0, 1); got {eval_fraction}")
    prompts = sorted(data.prompts(), key=lambda p: _unit_hash(p, seed))
    if len(prompts) < 2:
        raise UserError(f"cannot split by prompt: the data has {len(prompts)} distinct prompt(s), need 2")
    eval_prompts = {p for p in prompts if _unit_hash(p, seed) < eval_fraction}
    if not eval_prompts:
        eval_prompts = {prompts[0]}
    elif len(eval_prompts) == len(prompts):
        eval_prompts.discard(prompts[-1])

    def side(is_eval: bool) -> PreferenceData:
        pairs = [p for p in data.pairs if (p.prompt in eval_prompts) == is_eval]
        rankings = [r for r in data.rankings if (r.prompt in eval_prompts) == is_eval]
        binary = [b for b in data.binary if (b.prompt in eval_prompts) == is_eval]
        return PreferenceData(pairs, rankings, summarize(pairs, rankings, binary), binary)

    return side(False), side(True)


def _ratings_to_pairs(
    ratings: list[_Rating], rating_margin: bool = False
) -> tuple[list[PreferencePair], int]:
    """Pairs from ratings of the same (prompt, labeller, objective), and how many ratings had no partner.

    Ratings are only comparable on one labeller's scale for one objective. For every two responses in a
    group: chosen = the higher rating; equal ratings give a tie pair. margin = the difference if
    `rating_margin`, else 0.
    """
    groups: dict[tuple, list[_Rating]] = {}
    for r in ratings:
        groups.setdefault((r.prompt, r.labeller_id, r.objective), []).append(r)
    pairs, unpaired = [], 0
    for (prompt, labeller_id, objective), group in groups.items():
        unpaired += len(group) == 1
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                better, worse = (b, a) if b.rating > a.rating else (a, b)
                name, _, loc_a = a.source.rpartition(":")
                pairs.append(
                    PreferencePair(
                        prompt=prompt,
                        chosen=better.response,
                        rejected=worse.response,
                        margin=float(better.rating - worse.rating) if rating_margin else 0.0,
                        labeller_id=labeller_id,
                        objective=objective,
                        tie=a.rating == b.rating,
                        source=f"{name}:{loc_a}+{b.source.rpartition(':')[2]}",  # "r.jsonl:3+5"
                    )
                )
    return pairs, unpaired


# ----------------------------------------------------------------------------- row parsers


@dataclass(frozen=True)
class _Rating:
    prompt: str
    response: str
    rating: float
    labeller_id: str | None
    objective: str | None
    source: str


def _parse_pair(data: dict[str, Any], tokenizer: Any, source: str) -> PreferencePair:
    chosen, rejected = _required(data, "chosen"), _required(data, "rejected")
    if data.get("prompt") is not None:
        prompt = data["prompt"]
    elif is_messages(chosen) and is_messages(rejected):
        prompt, chosen, rejected = _implicit_prompt(
            check_messages(chosen, "chosen"), check_messages(rejected, "rejected")
        )
    else:
        raise RowError("field 'prompt' is missing (only message-list chosen/rejected may leave it implicit)")
    prompt_text, (chosen_text, rejected_text) = _render(
        prompt, {"chosen": chosen, "rejected": rejected}, tokenizer
    )
    tie = _tie(data)
    # Compared as model inputs: "Hello" and " Hello" after "Assistant:" are the same text to the model.
    if (
        join_prompt_response(prompt_text, chosen_text) == join_prompt_response(prompt_text, rejected_text)
        and not tie
    ):
        raise RowError("fields 'chosen' and 'rejected' are the same text (set 'tie': true if judged equal)")
    return PreferencePair(
        prompt=prompt_text,
        chosen=chosen_text,
        rejected=rejected_text,
        margin=_number(data, "margin", 0.0),
        weight=_weight(data),
        labeller_id=_label(data, "labeller_id", allow_int=True),
        objective=_label(data, "objective"),
        tie=tie,
        source=source,
    )


def _parse_ranking(data: dict[str, Any], tokenizer: Any, source: str) -> RankingExample:
    responses = _required(data, "responses")
    if not isinstance(responses, list):
        raise RowError(f"field 'responses' must be a list of responses, got {_type(responses)}")
    if len(responses) < 2:
        raise RowError(f"field 'responses' must hold at least 2 responses, got {len(responses)}")
    prompt_text, texts = _render(
        _required(data, "prompt"), {f"responses[{i}]": r for i, r in enumerate(responses)}, tokenizer
    )
    ranking = _ranking(_required(data, "ranking"), len(texts))
    group_of: dict[str, int] = {}
    for g, group in enumerate(ranking):
        for i in group:
            if group_of.setdefault(texts[i], g) != g:
                raise RowError(f"field 'responses': response {i} repeats another response ranked differently")
    return RankingExample(
        prompt=prompt_text,
        responses=tuple(texts),
        ranking=ranking,
        weight=_weight(data),
        labeller_id=_label(data, "labeller_id", allow_int=True),
        objective=_label(data, "objective"),
        source=source,
    )


def _parse_rating(data: dict[str, Any], tokenizer: Any, source: str) -> _Rating:
    prompt_text, (response_text,) = _render(
        _required(data, "prompt"), {"response": _required(data, "response")}, tokenizer
    )
    return _Rating(
        prompt=prompt_text,
        response=response_text,
        rating=_number(data, "rating"),
        labeller_id=_label(data, "labeller_id", allow_int=True),
        objective=_label(data, "objective"),
        source=source,
    )


def _parse_binary(data: dict[str, Any], tokenizer: Any, source: str) -> BinaryExample:
    prompt_text, (completion_text,) = _render(
        _required(data, "prompt"), {"completion": _required(data, "completion")}, tokenizer
    )
    return BinaryExample(
        prompt=prompt_text,
        completion=completion_text,
        label=_binary_label(data),
        weight=_weight(data),
        labeller_id=_label(data, "labeller_id", allow_int=True),
        objective=_label(data, "objective"),
        source=source,
    )


_PARSERS: dict[str, Callable[[dict[str, Any], Any, str], Any]] = {
    "pairs": _parse_pair,
    "rankings": _parse_ranking,
    "ratings": _parse_rating,
    "binary": _parse_binary,
}


def _detect_kind(data: dict[str, Any]) -> str | None:
    """The one format whose fields the row has; a row with the fields of two formats is a RowError (it
    would lose one of its labels), none is None."""
    kinds = [kind for kind, fields in KIND_FIELDS.items() if all(f in data for f in fields)]
    if len(kinds) > 1:
        fields = "; ".join(f"{k}: {'/'.join(KIND_FIELDS[k])}" for k in kinds)
        raise RowError(f"the row has the fields of {len(kinds)} formats ({fields}); give one label per row")
    return kinds[0] if kinds else None


def _duplicate_key(record: Any) -> tuple:
    """What makes two records the same: prompt, responses as model inputs, labeller and objective.

    Model inputs, so that a chat-rendered " Hello" and a plain "Hello" after "Assistant:" match; the
    labeller is in the key because a second labeller agreeing is another vote, not a duplicate.
    """
    if isinstance(record, PreferencePair):
        texts: tuple = (record.chosen, record.rejected)
    elif isinstance(record, RankingExample):
        texts = (*record.responses, record.ranking)
    elif isinstance(record, BinaryExample):
        texts = (record.completion,)
    else:
        texts = (record.response,)
    inputs = tuple(join_prompt_response(record.prompt, t) if isinstance(t, str) else t for t in texts)
    # the record's type: a thumbs-up and a comparison in one file are two answers, not duplicates
    return (type(record).__name__, record.prompt, inputs, record.labeller_id, record.objective)


def _check_agrees(record: Any, seen: Any) -> None:
    """A repeated rating or binary label must say what the first said: one labeller cannot both like and
    dislike one response."""
    field = "rating" if isinstance(record, _Rating) else "label" if isinstance(record, BinaryExample) else ""
    if field and getattr(record, field) != getattr(seen, field):
        new, old = (
            json.dumps(v) if isinstance(v, bool) else v
            for v in (getattr(record, field), getattr(seen, field))
        )
        raise RowError(
            f"field {field!r} {new} contradicts {field} {old} at {seen.source} for the same prompt, "
            "response, labeller and objective"
        )


# ----------------------------------------------------------------------------- field checks


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _required(data: dict[str, Any], field: str) -> Any:
    if field not in data:
        raise RowError(f"field {field!r} is missing")
    if data[field] is None:
        raise RowError(f"field {field!r} is null")
    return data[field]


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"field {field!r} must be a string, got {_type(value)}")
    if not value.strip():
        raise RowError(f"field {field!r} is empty")
    return value


def _prompt(value: Any, tokenizer: Any, field: str = "prompt") -> str:
    if isinstance(value, str):
        return _text(value, field)
    if is_messages(value):
        return render_prompt(check_messages(value, field), tokenizer)
    raise RowError(
        f"field {field!r} must be text or a list of {{role, content}} messages, got {_type(value)}"
    )


def _render(prompt: Any, responses: dict[str, Any], tokenizer: Any) -> tuple[str, list[str]]:
    """Prompt text and response texts; a text prompt needs text responses, a message prompt messages."""
    prompt_text = _prompt(prompt, tokenizer)
    if isinstance(prompt, str):
        return prompt_text, [_text(value, field) for field, value in responses.items()]
    prompt_messages = check_messages(prompt, "prompt")
    texts = []
    for field, value in responses.items():
        if not is_messages(value):
            raise RowError(f"field {field!r} must be a list of messages like 'prompt', got {_type(value)}")
        text = render_response(prompt_messages, check_messages(value, field), tokenizer, prompt_text, field)
        texts.append(_text(text, field))
    return prompt_text, texts


def _implicit_prompt(chosen: list, rejected: list) -> tuple[list, list, list]:
    """TRL's implicit prompt: the messages chosen and rejected share at the start."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise RowError("field 'prompt' is missing and 'chosen' and 'rejected' share no first message")
    if n == len(chosen) or n == len(rejected):
        raise RowError(
            "field 'prompt' is missing and one of 'chosen'/'rejected' is a prefix of the other, "
            "so nothing is left to compare after the shared prompt"
        )
    return chosen[:n], chosen[n:], rejected[n:]


def _number(data: dict[str, Any], field: str, default: float | None = None) -> float:
    """A finite number; `default` when absent or null, or required when `default` is None."""
    if default is None:
        value = _required(data, field)
    elif (value := data.get(field)) is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RowError(f"field {field!r} must be a number, got {_type(value)}")
    if not math.isfinite(value):
        raise RowError(f"field {field!r} must be a finite number, got {value}")
    return float(value)


def _weight(data: dict[str, Any]) -> float:
    weight = _number(data, "weight", 1.0)
    if weight <= 0:
        raise RowError(f"field 'weight' must be > 0, got {weight}")
    return weight


def _label(data: dict[str, Any], field: str, allow_int: bool = False) -> str | None:
    """A labeller id or objective name; absent, null and "" all mean none."""
    value = data.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RowError(
        f"field {field!r} must be a string{' or an integer' if allow_int else ''}, got {_type(value)}"
    )


def _binary_label(data: dict[str, Any]) -> bool:
    """True (desirable) or False (undesirable). JSON true/false, or 1/0 (a bool column that went through
    pandas or CSV: integers, or floats 1.0/0.0 when the column had a missing value); nothing else: "yes",
    0.5 or 2 would be guesses."""
    value = _required(data, "label")
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and value in (0.0, 1.0):  # pandas makes 0/1 with a missing value floats
        return bool(value)
    raise RowError(f"field 'label' must be true or false (or 1 or 0), got {json.dumps(value, default=str)}")


def _tie(data: dict[str, Any]) -> bool:
    value = data.get("tie")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RowError(f"field 'tie' must be true or false, got {_type(value)}")
    return value


def _ranking(value: Any, k: int) -> tuple[tuple[int, ...], ...]:
    """Tie groups, best first, from `[2, 0, 1]` or `[[2], [0, 1]]` or `[2, [0, 1]]`."""
    if not isinstance(value, list) or not value:
        raise RowError(f"field 'ranking' must be a non-empty list of response indices, got {value!r}")
    groups = []
    for item in value:
        members = item if isinstance(item, list) else [item]
        if not members or not all(isinstance(i, int) and not isinstance(i, bool) for i in members):
            raise RowError(
                f"field 'ranking' {value!r} must hold response indices or non-empty lists of them (ties)"
            )
        groups.append(tuple(members))
    if sorted(i for g in groups for i in g) != list(range(k)):
        raise RowError(
            f"field 'ranking' {value!r} is not a permutation of range({k}): "
            f"each of 0..{k - 1} must appear exactly once"
        )
    return tuple(groups)


def _unit_hash(prompt: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ----------------------------------------------------------------------------- bad rows


class _BadRows:
    """Stops at the first bad row, or collects bad rows and writes them to a JSONL report."""

    def __init__(self, path: str | Path, on_error: str, report_path: str | Path | None):
        if on_error not in ON_ERROR:
            raise UserError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        self.path = Path(path).expanduser()
        self.on_error = on_error
        self.report_path = (
            Path(report_path) if report_path else self.path.with_name(self.path.name + ".bad_rows.jsonl")
        )
        self.rows: list[dict[str, Any]] = []
        self.first = ""

    @property
    def count(self) -> int:
        return len(self.rows)

    def add(self, row: Row, exc: RowError) -> None:
        if self.on_error == "stop":
            raise UserError(f"{row.where}: {exc}") from exc
        self.first = self.first or f"{row.where}: {exc}"
        # default=str keeps the report writable whatever types a Parquet or datasets row holds.
        self.rows.append({"source": row.source, "error": str(exc), "row": _jsonable(row.data)})

    def finish(self, rows_read: int, rows_kept: int) -> None:
        """Write the report (skip mode, only if some row was bad); fail if no row was usable."""
        if rows_read == 0:
            raise UserError(f"{self.path} has no rows")
        if self.rows:
            write_jsonl(self.report_path, self.rows)
            if rows_kept:
                warnings.warn(
                    f"{self.path}: skipped {len(self.rows)} bad row(s) of {rows_read} (--on-error skip); "
                    f"first: {self.first}; every bad row is listed in {self.report_path}",
                    stacklevel=2,
                )
        if rows_kept == 0:
            raise UserError(
                f"{self.path}: all {rows_read} rows are bad; first: {self.first}; "
                f"every bad row is listed in {self.report_path}"
            )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str, ensure_ascii=False))
