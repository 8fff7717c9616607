"""Labelling pages: the next task (pairwise, ranking, rating, edit, binary), gold feedback, skip, guidelines,
and the labeller's own labels. Forms carry the session's CSRF token and a client request id, so a
double-clicked submit is stored once."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from rlhf.feedback.store import FeedbackStore, InvalidInput, LabelIn
from rlhf.io import read_text
from rlhf.web.deps import DbDep, FormUserDep, PageUserDep, SettingsDep

router = APIRouter(tags=["pages"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
_shuffle = random.SystemRandom()
MAX_ID = 2**31 - 1
PAIRWISE_SCALE = [  # the 7 keys of the pairwise scale, left to right on screen
    ("A", "much_better", "A is much better"),
    ("A", "better", "A is better"),
    ("A", "slightly_better", "A is slightly better"),
    (None, "tie", "About the same"),
    ("B", "slightly_better", "B is slightly better"),
    ("B", "better", "B is better"),
    ("B", "much_better", "B is much better"),
]
BINARY_BUTTONS = {"good": True, "bad": False}  # the binary page's two submit buttons


def render(request: Request, name: str, context: dict[str, Any], status: int = 200):
    return templates.TemplateResponse(request, name, context, status_code=status)


def error_page(request: Request, message: str, status: int):
    return render(request, "error.html", {"message": message, "status": status}, status)


@router.get("/")
async def home():
    return RedirectResponse("/label", status_code=303)


@router.get("/label")
async def label_page(request: Request, user: PageUserDep, db: DbDep):
    task = await db.next_task(user.labeller.id)
    if task is None:
        return render(request, "done.html", {"user": user})
    shown = list(task.responses)
    _shuffle.shuffle(shown)  # position bias: the order is random per showing and recorded with the label
    letters = {r.id: chr(ord("A") + i) for i, r in enumerate(shown)}
    return render(
        request,
        "task.html",
        {
            "user": user,
            "task": task,
            "shown": shown,
            "letters": letters,
            "scale": PAIRWISE_SCALE,
            "request_id": uuid.uuid4().hex,
            "displayed_order": ",".join(str(r.id) for r in shown),
        },
    )


def _ids(text: str, what: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInput(f"{what} must be response ids separated by commas") from None
    if any(not 1 <= i <= MAX_ID for i in ids) or len(ids) > 20:
        raise InvalidInput(f"{what} holds an id out of range")
    return ids


def _int(text: str | None, what: str, low: int, high: int) -> int | None:
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be from {low} to {high}")
    return value


def form_answer(form: dict[str, str], kind: str | None = None) -> LabelIn:
    """The label in a submitted task form (names as in templates/task.html)."""
    task_id = _int(form.get("task_id"), "task_id", 1, MAX_ID)
    if task_id is None:
        raise InvalidInput("the form has no task_id")
    answer = LabelIn(task_id=task_id, client_request_id=form.get("client_request_id", ""))
    preference = form.get("preference")
    if preference:
        if preference == "tie":
            answer.strength = "tie"
        else:
            choice, _, strength = preference.partition(":")
            answer.choice, answer.strength = _int(choice, "the preferred response", 1, MAX_ID), strength
    elif kind == "pairwise":
        raise InvalidInput("choose which response is better (keys 1-7) before submitting")
    if "label" in form:  # binary: the Good / Bad button pressed
        answer.label = BINARY_BUTTONS.get(form["label"])
        if answer.label is None:
            raise InvalidInput("label must be 'good' or 'bad'")
    elif kind == "binary":
        raise InvalidInput("choose Good (key g) or Bad (key b) to submit")
    if (form.get("reason") or "").strip():
        answer.reason = form["reason"].replace("\r\n", "\n")
    if form.get("ranking"):
        answer.ranking = _ids(form["ranking"], "ranking")
    answer.rating = _int(form.get("rating"), "rating", -(10**6), 10**6)
    if "edit_text" in form:
        answer.edit_text = form["edit_text"].replace("\r\n", "\n")
    answer.unsafe = form.get("unsafe") == "on"
    if form.get("displayed_order"):
        answer.displayed_order = _ids(form["displayed_order"], "displayed_order")
    try:
        seconds = float(form.get("seconds") or "nan")
        answer.seconds = seconds if 0 <= seconds <= 86_400 else None  # else the server's own timing
    except ValueError:
        answer.seconds = None
    return answer


@router.post("/label")
async def submit_page(request: Request, user: FormUserDep, db: DbDep):
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    answer = form_answer(form, form.get("kind"))
    result = await db.submit_label(user.labeller.id, answer)
    if result.gold is None:
        return RedirectResponse("/label", status_code=303)
    task = await db.read(FeedbackStore.get_task, user.labeller.id, answer.task_id)
    texts = {r.id: r.text for r in task.responses}
    return render(
        request,
        "gold_result.html",
        {
            "user": user,
            "task": task,
            "gold": result.gold,
            "expected": _describe_expected(result.gold.expected, texts),
        },
    )


def _describe_expected(expected: dict, texts: dict[int, str]) -> list[str]:
    if "choice" in expected:
        return ["About the same"] if expected["choice"] is None else [texts[expected["choice"]]]
    if "ranking" in expected:
        return [texts[i] for i in expected["ranking"]]
    if "label" in expected:
        return ["Good (thumbs up)" if expected["label"] else "Bad (thumbs down)"]
    return [f"a rating of {expected['rating']} (within one point counts)"]


@router.post("/skip")
async def skip_page(
    user: FormUserDep,
    db: DbDep,
    task_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    reason: Annotated[str, Form(max_length=2000)] = "",
):
    await db.skip(user.labeller.id, task_id, reason)
    return RedirectResponse("/label", status_code=303)


@router.get("/guidelines")
async def guidelines(request: Request, settings: SettingsDep, user: PageUserDep):
    text = read_text(settings.guidelines_file) if settings.guidelines_file else ""  # BOM dropped
    return render(request, "guidelines.html", {"user": user, "custom": text})


@router.get("/my/labels")
async def my_labels(request: Request, user: PageUserDep, db: DbDep):
    labels = await db.read(FeedbackStore.labels_of, user.labeller.id, 200)
    return render(request, "my_labels.html", {"user": user, "labels": labels})
