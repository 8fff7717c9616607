"""SQLAlchemy 2 models of the human-feedback store: what was asked, of whom, and what they answered.

A `Task` shows a prompt with one or more `Response`s in one of five kinds (pairwise, ranking, rating,
edit, binary: a thumbs up or down on one response). A labeller is handed a task through an `Assignment` (at most one per task and labeller); their
answer is a `Label`. Gold tasks carry a `GoldAnswer` (the researchers' answer and why) and are used for
onboarding. The schema itself is created by the Alembic migrations in `rlhf/feedback/migrations`; keep
them in step with this file (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TASK_KINDS = ("pairwise", "ranking", "rating", "edit", "binary")
ROLES = ("labeller", "admin")
# The pairwise strength scale; "tie" is a strength too, so one field carries the whole answer.
STRENGTHS = ("much_better", "better", "slightly_better", "tie")
ASSIGNMENT_STATES = ("active", "labelled", "skipped")


def utcnow() -> datetime:
    # Naive UTC: SQLite has no time zones, and mixing aware and naive datetimes breaks comparisons.
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[int]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    # Text is unbounded, so uniqueness is on its SHA-256 (PostgreSQL cannot index long text in a btree).
    __table_args__ = (UniqueConstraint("project_id", "text_sha256", name="uq_prompt_text"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("prompt_id", "text_sha256", "model", "model_version", name="uq_response"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200), default="")
    model_version: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Labeller(Base):
    __tablename__ = "labellers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="labeller")
    # SHA-256 of a 256-bit random token: enough against offline guessing, and constant-time lookups by hash.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    onboarded: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Estimated rationality on the target objective (rlhf.feedback.quality; 1 = as sharp as the reward
    # model), written by whoever fits the quality model; None until then. Tasks with a `min_quality`
    # go only to labellers whose quality reaches it.
    quality: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(20))
    response_ids: Mapped[list[int]] = mapped_column(JSON)
    objective: Mapped[str | None] = mapped_column(String(100), default=None)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    labels_wanted: Mapped[int] = mapped_column(Integer, default=1)
    # The least labeller quality this task is handed to (labeller-aware acquisition: hard, informative
    # comparisons to reliable labellers); None = anyone.
    min_quality: Mapped[float | None] = mapped_column(Float, default=None)
    # Counters on the task row itself, so "is there room for one more labeller" is a conditional UPDATE
    # of one row: correct under concurrency on both PostgreSQL and SQLite without reading other tables.
    n_assigned: Mapped[int] = mapped_column(Integer, default=0)
    n_labels: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | done
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    prompt: Mapped[Prompt] = relationship(lazy="joined")
    gold: Mapped[GoldAnswer | None] = relationship(lazy="joined", back_populates="task")


# The queue's order is `priority DESC, id`; this index is what `next_task` walks, in exactly that order,
# so the first open task is found without sorting the queue (an index on `priority` alone, read backwards,
# gives `id DESC` among equal priorities, and both SQLite and PostgreSQL then sorted every open task).
Index("ix_task_queue", Task.project_id, Task.status, Task.is_gold, Task.priority.desc(), Task.id)


class GoldAnswer(Base):
    __tablename__ = "gold_answers"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    # pairwise: {"choice": response_id} or {"choice": null} for a tie; ranking: {"ranking": [ids]};
    # rating: {"rating": n}; binary: {"label": true | false}
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    explanation: Mapped[str] = mapped_column(Text, default="")

    task: Mapped[Task] = relationship(back_populates="gold")


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "labeller_id", name="uq_assignment"),
        # The task a labeller holds (`next_task` on every call): their active rows only, not their history.
        Index("ix_assignment_held", "labeller_id", "state"),
        # The sweep for lapsed reservations: active rows past their time, not every old labelled one.
        Index("ix_assignment_expiry", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    labeller_id: Mapped[int] = mapped_column(ForeignKey("labellers.id"))
    state: Mapped[str] = mapped_column(String(20), default="active")
    skip_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        # A labeller answers a task once, and a retried request (same client id) is stored once.
        UniqueConstraint("task_id", "labeller_id", name="uq_label_task_labeller"),
        UniqueConstraint("labeller_id", "client_request_id", name="uq_label_request"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    labeller_id: Mapped[int] = mapped_column(ForeignKey("labellers.id"), index=True)
    client_request_id: Mapped[str] = mapped_column(String(100))
    choice_response_id: Mapped[int | None] = mapped_column(Integer, default=None)
    strength: Mapped[str | None] = mapped_column(String(20), default=None)
    tie: Mapped[bool] = mapped_column(Boolean, default=False)
    ranking: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    rating: Mapped[int | None] = mapped_column(Integer, default=None)
    edit_text: Mapped[str | None] = mapped_column(Text, default=None)
    # binary: the thumbs up (True) or down (False), and the labeller's optional reason for it
    label: Mapped[bool | None] = mapped_column(Boolean, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    unsafe: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    displayed_order: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    gold_correct: Mapped[bool | None] = mapped_column(Boolean, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Session(Base):
    """A signed-in browser: the cookie holds a random id, the table its hash and the CSRF token."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    labeller_id: Mapped[int] = mapped_column(ForeignKey("labellers.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class SignInFailure(Base):
    """Sign-in attempts by client address (failed, or under way), in the database so every worker process
    sees the same count (`rlhf.web.security.begin_sign_in`)."""

    __tablename__ = "sign_in_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    client: Mapped[str] = mapped_column(String(100), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
