"""The plain records the feedback store takes and returns, its errors, limits and token helpers.

Response ids (not positions) identify answers everywhere except in `Candidate.gold_answer` and import
files, which use indices into the candidate's own responses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.errors import UserError

# The questions a task can ask (its `objective`), as in the separate helpfulness and harmlessness data of
# Bai et al. 2022: "which response is better?" and "which response is less harmful?".
QUESTIONS = ("helpful", "harmless")

MAX_TEXT_CHARS = 20_000  # one prompt, response or edited answer
MAX_COMMENT_CHARS = 2_000
RATING_SCALE = (1, 7)  # Likert
RESPONSES_PER_KIND = {
    "pairwise": (2, 2),
    "ranking": (2, 9),
    "rating": (1, 1),
    "edit": (1, 1),
    "binary": (1, 1),
}
LABELLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


class StoreError(UserError):
    """A request the store refuses; the web app maps the subclasses to 403 / 404 / 409 / 422."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class InvalidInput(StoreError):
    pass


class Forbidden(StoreError):
    """The caller may not do this (e.g. answer a task that is not assigned to them)."""


class Unauthenticated(StoreError):
    """No active labeller holds the token given (wrong, rotated or revoked); the web app's 401."""


class Token(str):
    """A labeller's bearer token, given to `next_task` / `submit_label` instead of the labeller's id: the
    token is then checked in the same transaction as the work (`Unauthenticated` when no active labeller
    holds it), so a web request costs one transaction, not a lookup and then the work."""


def new_token() -> str:
    return "rlhf_" + secrets.token_urlsafe(32)  # 256 random bits


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ResponseIn:
    text: str
    model: str = ""
    model_version: str = ""


@dataclass
class Candidate:
    """A task to put in the queue. `gold_answer` uses response *indices* (0-based, as in `responses`):
    pairwise {"choice": i} or {"choice": None} for a tie, ranking {"ranking": [i, ...]}, rating {"rating": n},
    binary {"label": True | False}."""

    prompt: str
    responses: Sequence[ResponseIn | str]
    kind: str = "pairwise"
    priority: float = 0.0
    labels_wanted: int = 1
    objective: str | None = None
    gold_answer: dict[str, Any] | None = None
    explanation: str = ""
    min_quality: float | None = None  # only labellers of at least this estimated quality get it


def task_key(c: Candidate) -> tuple:
    """What makes two tasks the same question: prompt, responses (in any order), kind, objective, gold-ness."""
    responses = [ResponseIn(r) if isinstance(r, str) else r for r in c.responses]
    texts = tuple(sorted((r.text, r.model, r.model_version) for r in responses))
    return (c.prompt, texts, c.kind, c.objective, c.gold_answer is not None)


@dataclass
class LabelIn:
    """An answer to one task. Response ids (not positions): `choice` is the preferred response (None with
    strength "tie"), `ranking` lists every response id best first; `label` is a binary task's thumbs up
    (True) or down (False), `reason` its optional why."""

    task_id: int
    client_request_id: str
    choice: int | None = None
    strength: str | None = None
    ranking: list[int] | None = None
    rating: int | None = None
    edit_text: str | None = None
    label: bool | None = None
    reason: str | None = None
    unsafe: bool = False
    comment: str | None = None
    seconds: float | None = None
    displayed_order: list[int] | None = None


@dataclass(frozen=True)
class ResponseView:
    id: int
    text: str
    model: str
    model_version: str


@dataclass(frozen=True)
class TaskView:
    id: int
    kind: str
    prompt: str
    responses: list[ResponseView]
    objective: str | None
    is_gold: bool
    expires_at: Any = None


@dataclass(frozen=True)
class LabellerView:
    id: int
    name: str
    role: str
    onboarded: bool
    flagged: bool
    active: bool = True  # a deactivated labeller's token and sessions are refused
    quality: float | None = None  # estimated rationality (rlhf.feedback.quality); None = not estimated


@dataclass(frozen=True)
class TaskProgress:
    """Where a task stands: labels wanted, the labellers who gave one, and the active labellers the queue
    may still hand it to (each labeller answers a task once; one who skipped it is not asked again)."""

    task_id: int
    labels_wanted: int
    labelled_by: tuple[str, ...]
    can_label: tuple[str, ...]

    @property
    def missing(self) -> int:
        return max(self.labels_wanted - len(self.labelled_by), 0)


@dataclass(frozen=True)
class GoldFeedback:
    correct: bool
    expected: dict[str, Any]
    explanation: str


@dataclass(frozen=True)
class LabelView:
    id: int
    task_id: int
    labeller_id: int
    client_request_id: str
    kind: str
    choice: int | None
    strength: str | None
    tie: bool
    ranking: list[int] | None
    rating: int | None
    edit_text: str | None
    unsafe: bool
    comment: str | None
    seconds: float | None
    displayed_order: list[int] | None
    created_at: Any
    label: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    label: LabelView
    created: bool  # False: this client_request_id was already stored; nothing changed
    gold: GoldFeedback | None = None


@dataclass
class StoreSettings:
    project: str = "default"
    assignment_seconds: float = 1800.0  # a reserved task goes back to the queue after this long
    onboarding_questions: int = 5  # gold tasks a new labeller answers first (at most)
    gold_accuracy_threshold: float = 0.7  # below this onboarding accuracy a labeller is flagged
    extra: dict[str, Any] = field(default_factory=dict)
