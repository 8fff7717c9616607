"""Validation of what enters the store (candidates, answers) and grading of answers to gold questions.

Every refusal is an `InvalidInput` whose message says what is wrong and what would be right.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from rlhf.feedback.models import STRENGTHS, TASK_KINDS, Label, Task
from rlhf.feedback.records import (
    MAX_COMMENT_CHARS,
    MAX_TEXT_CHARS,
    RATING_SCALE,
    RESPONSES_PER_KIND,
    Candidate,
    InvalidInput,
    LabelIn,
)

# The one field a gold answer of each kind holds (edit tasks have no gold answer).
GOLD_FIELD = {"pairwise": "choice", "ranking": "ranking", "rating": "rating", "binary": "label"}


def gold_problem(task: Task) -> str | None:
    """What is wrong with a task's stored gold answer (response ids), or None when it is well formed.
    Rows written before import checked gold answers against the task kind may hold any shape."""
    answer, ids = task.gold.answer if task.gold else None, list(task.response_ids)
    field = GOLD_FIELD.get(task.kind)
    if field is None:
        return f"a {task.kind} task cannot have a gold answer"
    if not isinstance(answer, dict) or set(answer) != {field}:
        return f"a {task.kind} gold answer is {{{field!r}: ...}}, not {answer!r:.200}"
    value = answer[field]
    if task.kind == "pairwise" and not (value is None or (_is_int(value) and value in ids)):
        return f"gold choice {value!r:.50} is not null or one of the task's response ids {ids}"
    if task.kind == "ranking" and not (
        isinstance(value, list) and all(map(_is_int, value)) and sorted(value) == sorted(ids)
    ):
        return f"gold ranking {value!r:.200} is not a permutation of the task's response ids {ids}"
    if task.kind == "rating" and not (_is_int(value) and RATING_SCALE[0] <= value <= RATING_SCALE[1]):
        return f"gold rating {value!r:.50} is not an integer from {RATING_SCALE[0]} to {RATING_SCALE[1]}"
    if task.kind == "binary" and not isinstance(value, bool):
        return f"gold label {value!r:.50} is not true or false"
    return None


def gold_correct(task: Task, label: Label) -> bool | None:
    """Pairwise: same preferred response (or both a tie), strength aside; ranking: the same order;
    rating: within one point of the researchers' rating; binary: the same thumbs up or down. None (ungraded) when the stored gold answer
    is malformed (`gold_problem`): a broken question must not refuse every answer to it."""
    if gold_problem(task) is not None:
        return None
    answer = task.gold.answer
    if task.kind == "pairwise":
        return label.choice_response_id == answer["choice"] if not label.tie else answer["choice"] is None
    if task.kind == "ranking":
        return list(label.ranking or []) == list(answer["ranking"])
    if task.kind == "binary":
        return label.label is not None and bool(label.label) == answer["label"]
    return label.rating is not None and abs(label.rating - answer["rating"]) <= 1


def gold_to_ids(kind: str, answer: dict[str, Any], response_ids: list[int]) -> dict[str, Any]:
    """A gold answer checked by `check_candidate` (response indices) in response ids, as stored."""
    if kind == "pairwise":
        return {"choice": None if answer["choice"] is None else response_ids[answer["choice"]]}
    if kind == "ranking":
        return {"ranking": [response_ids[i] for i in answer["ranking"]]}
    if kind == "binary":
        return {"label": answer["label"]}
    return {"rating": answer["rating"]}


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not float: JSON true and 1.0 are not response indices


def check_keys(obj: dict[str, Any], allowed: Iterable[str], where: str = "") -> None:
    """Refuse a key outside `allowed`, suggesting the known key closest to it (a misspelling)."""
    allowed = sorted(allowed)
    for key in obj:
        if key in allowed:
            continue
        name = str(key)[:40]  # a name, not an echo of whatever was sent
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(allowed)}"
        raise InvalidInput(f"{where + ': ' if where else ''}unknown field {name!r}; {hint}")


def is_unicode(text: str) -> bool:
    """False for text holding a lone surrogate (JSON's "\\ud800" escape), which UTF-8 and databases refuse."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(text: Any, what: str, limit: int = MAX_TEXT_CHARS, optional: bool = False) -> None:
    if optional and text is None:
        return
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{what} must be non-empty text")
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text):,} characters; the limit is {limit:,}")
    if "\x00" in text:  # PostgreSQL text cannot hold NUL; refuse it on every backend alike
        raise InvalidInput(f"{what} contains a NUL character")
    if not is_unicode(text):
        raise InvalidInput(
            f"{what} contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode"
        )


def check_request_id(request_id: Any) -> None:
    if (
        not isinstance(request_id, str)
        or not 1 <= len(request_id) <= 100
        or "\x00" in request_id
        or not is_unicode(request_id)
    ):
        raise InvalidInput("client_request_id must be 1-100 characters (e.g. a UUID made once per answer)")


def check_candidate(c: Candidate, where: str) -> None:
    """Refuse a task that does not fit its kind; `where` starts every message ("candidate 3",
    "tasks.jsonl line 4")."""
    if c.kind not in TASK_KINDS:
        raise InvalidInput(f"{where}: kind {c.kind!r}; expected one of {', '.join(TASK_KINDS)}")
    check_text(c.prompt, f"{where}: prompt")
    low, high = RESPONSES_PER_KIND[c.kind]
    if not low <= len(c.responses) <= high:
        need = str(low) if low == high else f"{low} to {high}"
        noun = "response" if high == 1 else "responses"
        raise InvalidInput(f"{where}: a {c.kind} task needs {need} {noun}, got {len(c.responses)}")
    texts = [r if isinstance(r, str) else r.text for r in c.responses]
    for i, text in enumerate(texts):
        check_text(text, f"{where}: response {i}")
    for i, r in enumerate(c.responses):
        for name in ("model", "model_version"):
            value = getattr(r, name, "")
            if value != "":
                check_text(value, f"{where}: response {i} {name}", 200)
    if len(set(texts)) != len(texts):
        raise InvalidInput(f"{where}: the same response text appears twice")
    if not _is_int(c.labels_wanted) or not 1 <= c.labels_wanted <= 100:
        raise InvalidInput(f"{where}: labels_wanted must be an integer from 1 to 100")
    if type(c.priority) not in (int, float) or not math.isfinite(c.priority):
        raise InvalidInput(f"{where}: priority must be a finite number")
    if c.min_quality is not None and (
        type(c.min_quality) not in (int, float) or not math.isfinite(c.min_quality)
    ):
        raise InvalidInput(f"{where}: min_quality must be a finite number or null")
    check_text(c.objective, f"{where}: objective", 100, optional=True)
    check_text(c.explanation or None, f"{where}: explanation", MAX_COMMENT_CHARS, optional=True)
    if c.gold_answer is not None:
        _check_gold(c, where)


def _check_gold(c: Candidate, where: str) -> None:
    """A gold answer holds exactly its kind's field (response indices): a rating gold with a 'choice'
    was stored as a choice and failed every answer, so other and conflicting keys are refused."""
    n, answer = len(c.responses), c.gold_answer
    field = GOLD_FIELD.get(c.kind)
    if field is None:
        raise InvalidInput(f"{where}: edit tasks cannot be gold questions")
    if not isinstance(answer, dict):
        raise InvalidInput(f"{where}: gold answer must be an object, {{{field!r}: ...}}")
    other = sorted(str(k)[:40] for k in answer if k != field)  # a key's name, cut as in web replies
    if other:
        wrong = other[0] if other[0] in GOLD_FIELD.values() else None
        hint = f" ({wrong!r} is for {_kind_of(wrong)} tasks)" if wrong else ""
        raise InvalidInput(
            f"{where}: a {c.kind} gold answer is {{{field!r}: ...}} only; field {other[0]!r} does not apply{hint}"
        )
    if field not in answer:
        raise InvalidInput(f"{where}: gold answer has no {field!r}")
    value = answer[field]
    if c.kind == "pairwise" and value is not None and not (_is_int(value) and value in range(n)):
        raise InvalidInput(f"{where}: gold 'choice' must be 0, 1 or null (a tie)")
    if c.kind == "ranking" and not (
        isinstance(value, list) and all(map(_is_int, value)) and sorted(value) == list(range(n))
    ):
        raise InvalidInput(f"{where}: gold 'ranking' must be a permutation of 0..{n - 1}")
    if c.kind == "rating" and not (_is_int(value) and RATING_SCALE[0] <= value <= RATING_SCALE[1]):
        raise InvalidInput(
            f"{where}: gold 'rating' must be an integer from {RATING_SCALE[0]} to {RATING_SCALE[1]}"
        )
    if c.kind == "binary" and not isinstance(value, bool):
        raise InvalidInput(f"{where}: gold 'label' must be true (good) or false (bad)")


def _kind_of(field: str) -> str:
    return next(kind for kind, f in GOLD_FIELD.items() if f == field)


def check_answer(task: Task, a: LabelIn) -> None:
    """Refuse an answer that does not fit the task, with a message that says what would."""
    ids = list(task.response_ids)
    given = {
        "choice": a.choice is not None,
        "strength": a.strength is not None,
        "ranking": a.ranking is not None,
        "rating": a.rating is not None,
        "edit_text": a.edit_text is not None,
        "label": a.label is not None,
        "reason": a.reason is not None,
    }
    allowed = {
        "pairwise": {"choice", "strength"},
        "ranking": {"ranking"},
        "rating": {"rating"},
        "edit": {"edit_text"},
        "binary": {"label", "reason"},
    }[task.kind]
    extra = sorted(k for k, v in given.items() if v and k not in allowed)
    if extra:
        raise InvalidInput(
            f"{', '.join(extra)} does not apply to a {task.kind} task (it takes {', '.join(sorted(allowed))})"
        )
    if task.kind == "pairwise":
        if a.strength not in STRENGTHS:
            raise InvalidInput(f"strength must be one of {', '.join(STRENGTHS)}")
        if a.strength == "tie" and a.choice is not None:
            raise InvalidInput("a tie has no choice; send choice null with strength 'tie'")
        if a.strength != "tie" and a.choice not in ids:
            raise InvalidInput(f"choice must be the id of the preferred response, one of {ids}")
    elif task.kind == "ranking":
        if (
            not isinstance(a.ranking, list)
            or sorted(a.ranking) != sorted(ids)
            or len(set(a.ranking)) != len(ids)
        ):
            raise InvalidInput(f"the ranking is not a permutation of the task's response ids {ids}")
    elif task.kind == "rating":
        low, high = RATING_SCALE
        if not isinstance(a.rating, int) or isinstance(a.rating, bool) or not low <= a.rating <= high:
            raise InvalidInput(f"rating must be an integer from {low} to {high}")
    elif task.kind == "binary":
        if not isinstance(a.label, bool):
            raise InvalidInput("label must be true (good) or false (bad)")
        check_text(a.reason, "reason", MAX_COMMENT_CHARS, optional=True)
    else:
        check_text(a.edit_text, "edit_text")
    if a.displayed_order is not None and (
        not isinstance(a.displayed_order, list) or sorted(a.displayed_order) != sorted(ids)
    ):
        raise InvalidInput(f"displayed_order must list the task's response ids {ids} in the order shown")
    check_text(a.comment, "comment", MAX_COMMENT_CHARS, optional=True)
    if a.seconds is not None and not (isinstance(a.seconds, int | float) and 0 <= a.seconds <= 86_400):
        raise InvalidInput("seconds must be a number from 0 to 86400")
