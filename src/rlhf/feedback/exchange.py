"""Moving data in and out of the feedback store: import prompts/responses as tasks, export labels as
the preference files `rlhf.data.load_preferences` reads (pairs, rankings, ratings; docs/data.md), and
binary labels as unpaired rows in TRL's KTO convention (`binary`).

Import rows (JSONL), one task each, checked against the kind's schema before anything is stored (an
unknown or misspelt field, a value of the wrong type, a gold answer that does not fit the kind, a row
repeating another: refused, naming the file's line):
    {"prompt": "...", "responses": ["...", {"text": "...", "model": "m", "model_version": "v1"}],
     "kind": "pairwise", "priority": 0.5, "labels_wanted": 1, "objective": "helpful",
     "gold": {"answer": {"choice": 0}, "explanation": "why"}}
`objective` names the reward head the task's labels train (exported with each label; `rlhf label import
--objective` sets it for rows without one). `kind` defaults to pairwise for two responses and ranking
for more; for one response it must be given (rating, edit or binary; a binary gold answer is
{"label": true | false}).

Export: gold (onboarding) tasks are left out; every row carries `labeller_id` (the labeller's name) and
provenance fields (`label_id`, `task_id`, `unsafe`) that the readers ignore. An edit ("write a better
answer") becomes a pair: the labeller's text chosen over the response it improves. A binary label (thumbs
up or down) becomes an unpaired row, TRL's KTO format plus the same provenance:
    {"prompt": "...", "completion": "...", "label": true, "labeller_id": "ann", "objective": "helpful",
     "reason": "why, when given", "label_id": 7, "task_id": 3}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rlhf.errors import UserError
from rlhf.feedback.checks import check_candidate, check_keys
from rlhf.feedback.models import Label, Labeller, Prompt, Response, Task
from rlhf.feedback.store import Candidate, FeedbackStore, InvalidInput, ResponseIn, task_key
from rlhf.io import iter_jsonl, write_jsonl

EXPORT_KINDS = ("pairs", "rankings", "ratings", "binary")  # binary: unpaired rows (KTO)
# The labeller's strength as a margin on a 0-3 scale (0 = unknown in rlhf.data), so a reward model
# can weight "much better" above "slightly better".
STRENGTH_MARGIN = {"slightly_better": 1.0, "better": 2.0, "much_better": 3.0}


ROW_FIELDS = ("prompt", "responses", "kind", "priority", "labels_wanted", "objective", "gold")
RESPONSE_FIELDS = ("text", "model", "model_version")
GOLD_FIELDS = ("answer", "explanation")


def candidate_from_row(row: dict[str, Any], where: str, objective: str | None = None) -> Candidate:
    """One task from an import row, checked against its kind's schema: unknown fields (named with the
    closest known one), values of the wrong type and gold answers that do not fit the kind raise
    `InvalidInput` starting with `where`. `objective` is the default for a row that names none."""
    check_keys(row, ROW_FIELDS, where)
    if not isinstance(row.get("responses"), list):
        raise InvalidInput(
            f"{where}: field 'responses' must be a list of texts or {{'text', 'model', ...}} objects"
        )
    responses = []
    for i, item in enumerate(row["responses"]):
        if isinstance(item, str):
            responses.append(ResponseIn(item))
            continue
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: responses[{i}] must be text or an object with 'text'")
        check_keys(item, RESPONSE_FIELDS, f"{where}: responses[{i}]")
        for name in RESPONSE_FIELDS:
            if not isinstance(item.get(name, ""), str):
                raise InvalidInput(f"{where}: responses[{i}].{name} must be text")
        responses.append(
            ResponseIn(item.get("text", ""), item.get("model", ""), item.get("model_version", ""))
        )
    kind = row.get("kind") or (
        "pairwise" if len(responses) == 2 else "ranking" if len(responses) > 2 else None
    )
    if kind is None:
        raise InvalidInput(f"{where}: one response: give 'kind' ('rating', 'edit' or 'binary')")
    gold = row.get("gold")
    if gold is not None:
        if not isinstance(gold, dict) or not isinstance(gold.get("answer"), dict):
            raise InvalidInput(f"{where}: field 'gold' must be {{'answer': {{...}}, 'explanation': '...'}}")
        check_keys(gold, GOLD_FIELDS, f"{where}: gold")
    candidate = Candidate(
        prompt=row.get("prompt"),
        responses=responses,
        kind=kind,
        priority=row.get("priority", 0.0),
        labels_wanted=row.get("labels_wanted", 1),
        objective=row.get("objective") or objective,
        gold_answer=gold["answer"] if gold else None,
        explanation=gold.get("explanation", "") if gold else "",
    )
    check_candidate(candidate, where)
    return candidate


def refuse_repeats(candidates: Sequence[Candidate], names: Sequence[str], source: str = "") -> None:
    """Refuse a candidate that repeats an earlier one; `names[i]` says where candidate i came from
    ("line 4"), `source` what they are in ("tasks.jsonl")."""
    first: dict[tuple, int] = {}
    for i, candidate in enumerate(candidates):
        earlier = first.setdefault(task_key(candidate), i)
        if earlier != i:
            raise InvalidInput(
                f"{source + ' ' if source else ''}{names[i]}: the same task as {names[earlier]} (prompt, "
                "responses, kind and objective); to have several labellers answer it, set labels_wanted"
            )


def import_file(
    store: FeedbackStore, path: str | Path, objective: str | None = None, allow_repeats: bool = False
) -> int:
    """Add one task per row of a JSONL file, all in one transaction (a bad row adds nothing); returns
    the number of tasks. `objective` (the reward head the labels train, e.g. "harmless") applies to rows
    that name none. A row repeating an earlier row, or (unless `allow_repeats`) a task already stored,
    is refused: importing the same file twice would otherwise ask every question twice."""
    rows = [(f"line {n}", row) for n, row in iter_jsonl(path)]
    if not rows:
        raise UserError(f"{path} has no rows; expected one task per line (docs/labelling.md)")
    candidates = [candidate_from_row(row, f"{path} {line}", objective) for line, row in rows]
    names = [line for line, _ in rows]
    refuse_repeats(candidates, names, str(path))
    if not allow_repeats:
        for name, task_id in zip(names, store.matching_tasks(candidates), strict=True):
            if task_id is not None:
                raise InvalidInput(
                    f"{path} {name}: the same task is already in the store (task {task_id}); "
                    "remove the row, or pass --allow-repeats to ask it again"
                )
    return len(store.push_candidates(candidates))


EXPORT_CHUNK = 1_000  # labels read per query while exporting


def export_rows(store: FeedbackStore, kind: str) -> Iterator[dict[str, Any]]:
    """Rows of one preference format built from the stored labels, oldest label first.

    One read transaction (a consistent snapshot), read `EXPORT_CHUNK` labels at a time with their
    tasks, prompts and response texts, so memory stays flat however many labels there are."""
    if kind not in EXPORT_KINDS:
        raise UserError(f"unknown export kind {kind!r}: expected one of {', '.join(EXPORT_KINDS)}")
    task_kinds = {"pairs": ("pairwise", "edit"), "rankings": ("ranking",), "ratings": ("rating",),
                  "binary": ("binary",)}[kind]  # fmt: skip
    query = (
        select(Label, Task, Labeller.name, Prompt.text)
        .join(Task, Task.id == Label.task_id)
        .join(Labeller, Labeller.id == Label.labeller_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(Task.project_id == store.project_id, Task.is_gold.is_(False), Task.kind.in_(task_kinds))
        .order_by(Label.id)
        .limit(EXPORT_CHUNK)
    )
    with store.read() as s:
        last_id = 0
        while True:
            rows = s.execute(query.where(Label.id > last_id)).all()
            if not rows:
                return
            last_id = rows[-1][0].id
            ids = {i for _, task, _, _ in rows for i in task.response_ids}
            texts = dict(s.execute(select(Response.id, Response.text).where(Response.id.in_(ids))).all())
            for label, task, name, prompt in rows:
                row = _export_row(label, task, prompt, name, texts)
                if task.objective is not None:
                    row["objective"] = task.objective
                row.update(label_id=label.id, task_id=task.id)
                if label.unsafe:
                    row["unsafe"] = True
                yield row
            s.expunge_all()  # the chunk's objects are written out: let them go


def _export_row(label: Label, task: Task, prompt: str, name: str, texts: dict[int, str]) -> dict[str, Any]:
    ids = task.response_ids
    if task.kind == "pairwise":
        if label.tie:
            return {
                "prompt": prompt,
                "chosen": texts[ids[0]],
                "rejected": texts[ids[1]],
                "tie": True,
                "labeller_id": name,
            }
        other = ids[1] if label.choice_response_id == ids[0] else ids[0]
        return {
            "prompt": prompt,
            "chosen": texts[label.choice_response_id],
            "rejected": texts[other],
            "margin": STRENGTH_MARGIN[label.strength],
            "labeller_id": name,
        }
    if task.kind == "edit":
        return {
            "prompt": prompt,
            "chosen": label.edit_text,
            "rejected": texts[ids[0]],
            "labeller_id": name,
            "edit": True,
        }
    if task.kind == "ranking":
        position = {response_id: i for i, response_id in enumerate(ids)}
        return {
            "prompt": prompt,
            "responses": [texts[i] for i in ids],
            "ranking": [position[i] for i in label.ranking],
            "labeller_id": name,
        }
    if task.kind == "binary":
        row = {"prompt": prompt, "completion": texts[ids[0]], "label": bool(label.label), "labeller_id": name}
        if label.reason is not None:
            row["reason"] = label.reason
        return row
    return {"prompt": prompt, "response": texts[ids[0]], "rating": label.rating, "labeller_id": name}


def export_file(store: FeedbackStore, kind: str, out: str | Path) -> int:
    """Write one preference file atomically; returns the number of rows."""
    return write_jsonl(out, export_rows(store, kind))
