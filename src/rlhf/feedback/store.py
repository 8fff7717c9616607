"""The feedback store: labellers and their tokens, the task queue, and labels, on SQLite or PostgreSQL.

`FeedbackStore(url)` opens (and migrates) a database. Every public method is one transaction.

The queue: `push_candidates` adds tasks with priorities (the active-learning loop fills it);
`next_task(labeller)` hands out the highest-priority open task the labeller has not seen, reserving a
place on it for `assignment_seconds`. A task wants `labels_wanted` independent labels; the reservation is
a conditional `UPDATE tasks SET n_assigned = n_assigned + 1 WHERE n_labels + n_assigned < labels_wanted`,
so two labellers can never both hold the last place, on either backend (PostgreSQL additionally skips
rows another worker has locked, `FOR UPDATE SKIP LOCKED`, so workers do not queue behind each other).

Labels: `submit_label` is idempotent on (labeller, client_request_id): a retried submission returns the
label already stored. A label is accepted only for a task the queue assigned to that labeller (their
reservation still held); anything else is `Forbidden`, whether the task exists, is someone else's or is
gold. A new labeller answers the gold tasks first (onboarding; an ordinary task before that is a
`Conflict`) and sees the gold answer only after answering; below `gold_accuracy_threshold` they are
flagged for review.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhf.feedback.checks import (
    check_answer,
    check_candidate,
    check_request_id,
    check_text,
    gold_correct,
    gold_problem,
    gold_to_ids,
)
from rlhf.feedback.db import READ_ONLY, is_postgres, make_engine, migrate
from rlhf.feedback.models import (
    ROLES,
    Assignment,
    GoldAnswer,
    Label,
    Labeller,
    Project,
    Prompt,
    Response,
    Task,
    utcnow,
)
from rlhf.feedback.models import Session as WebSession

# The records, errors and limits live in `records`; they are importable from here too.
from rlhf.feedback.records import (  # noqa: F401
    LABELLER_NAME,
    MAX_COMMENT_CHARS,
    MAX_TEXT_CHARS,
    RATING_SCALE,
    Candidate,
    Conflict,
    Forbidden,
    GoldFeedback,
    InvalidInput,
    LabelIn,
    LabellerView,
    LabelView,
    NotFound,
    ResponseIn,
    ResponseView,
    StoreError,
    StoreSettings,
    SubmitResult,
    TaskProgress,
    TaskView,
    Token,
    Unauthenticated,
    hash_token,
    new_token,
    task_key,
    text_sha256,
)

log = logging.getLogger(__name__)


class FeedbackStore:
    """One database (and one project in it). Safe to share between threads; open one per process."""

    def __init__(
        self, url: str, settings: StoreSettings | None = None, *, run_migrations: bool = True, **engine_kw
    ):
        self.settings = settings or StoreSettings()
        self.engine = make_engine(url, **engine_kw)
        self.postgres = is_postgres(self.engine)
        if run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._sqlite_writer = threading.Lock()
        self._next_release = 0.0  # monotonic time of the next sweep for lapsed reservations
        self.project_id = self._ensure_project(self.settings.project)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A read-write transaction (SQLite: the write lock is taken at its start)."""
        if self.postgres:
            with self._sessions.begin() as session:
                yield session
            return
        # SQLite admits one writer; threads that miss its lock poll with growing sleeps (up to 100 ms),
        # which made p99 latency seconds under load. Queueing on a Python lock first wakes them in turn.
        with self._sqlite_writer, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads (SQLite: no write lock, so it never waits for writers)."""
        with self._read_sessions.begin() as session:
            yield session

    @contextmanager
    def _read_connection(self) -> Iterator[Connection]:
        """`read` on a bare connection, without an ORM session (a third of the cost of one lookup)."""
        with self._read_engine.begin() as connection:
            yield connection

    def _ensure_project(self, name: str) -> int:
        for _ in range(2):  # a concurrent creator may win the unique name; then read theirs
            try:
                with self.transaction() as s:
                    project = s.scalars(select(Project).where(Project.name == name)).first()
                    if project is None:
                        project = Project(name=name)
                        s.add(project)
                        s.flush()
                    return project.id
            except IntegrityError:
                continue
        raise StoreError(f"could not create project {name!r}")

    # ------------------------------------------------------------------ labellers

    def add_labeller(
        self, name: str, role: str = "labeller", onboarded: bool = False
    ) -> tuple[LabellerView, str]:
        """Create a labeller; returns it and its token (shown once: only the hash is stored)."""
        if not LABELLER_NAME.match(name):
            raise InvalidInput(
                "a labeller name is 1-100 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
            )
        if role not in ROLES:
            raise InvalidInput(f"the role must be one of {', '.join(ROLES)}")
        token = new_token()
        try:
            with self.transaction() as s:
                labeller = Labeller(
                    name=name,
                    role=role,
                    token_sha256=hash_token(token),
                    onboarded=onboarded or role == "admin",
                )
                s.add(labeller)
                s.flush()
                return _labeller_view(labeller), token
        except IntegrityError as exc:
            raise Conflict("a labeller with this name already exists") from exc

    def labeller_by_name(self, name: str) -> LabellerView | None:
        with self.read() as s:
            labeller = s.scalars(select(Labeller).where(Labeller.name == name)).first()
            return _labeller_view(labeller) if labeller else None

    def labeller_by_token(self, token: str) -> LabellerView | None:
        if not token or len(token) > 200:
            return None
        with self._read_connection() as c:  # on every API request: one indexed SELECT
            labeller = c.execute(_LABELLER_BY_TOKEN, {"digest": hash_token(token)}).first()
            return _labeller_view(labeller) if labeller else None

    def get_labeller(self, labeller_id: int) -> LabellerView | None:
        with self.read() as s:
            labeller = s.get(Labeller, labeller_id)
            return _labeller_view(labeller) if labeller else None

    def active_labellers(self) -> list[LabellerView]:
        """The accounts `next_task` hands tasks to, by name: every active one, admins included."""
        with self.read() as s:
            return [
                _labeller_view(x)
                for x in s.scalars(select(Labeller).where(Labeller.active).order_by(Labeller.name))
            ]

    def labellers(self) -> list[LabellerView]:
        """Every account, active or not, by name."""
        with self.read() as s:
            return [_labeller_view(x) for x in s.scalars(select(Labeller).order_by(Labeller.name))]

    def set_active(self, labeller_id: int, active: bool) -> LabellerView:
        """Deactivate (or reactivate) an account. Deactivating takes effect on the labeller's next
        request: their token and sessions are refused, their sessions are ended (reactivating does not
        revive them) and the tasks they hold go back to the queue. Raises NotFound."""
        with self.transaction() as s:
            labeller = s.get(Labeller, labeller_id)
            if labeller is None:
                raise NotFound(f"no labeller {labeller_id}")
            labeller.active = active
            if not active:
                s.execute(delete(WebSession).where(WebSession.labeller_id == labeller_id))
                self._release(s, select(Assignment).where(
                    Assignment.labeller_id == labeller_id, Assignment.state == "active"
                ))  # fmt: skip
            return _labeller_view(labeller)

    def set_quality(self, qualities: dict[int, float | None]) -> int:
        """Record labellers' estimated quality (labeller id -> rationality, None to forget it); `next_task`
        hands a task with a `min_quality` only to labellers whose quality reaches it. Returns how many
        rows changed. Raises InvalidInput for a value that is not a finite number or None."""
        for labeller_id, value in qualities.items():
            if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
                raise InvalidInput(f"labeller {labeller_id}: quality must be a finite number or None")
        with self.transaction() as s:
            return sum(
                s.execute(
                    update(Labeller).where(Labeller.id == int(labeller_id))
                    .values(quality=None if value is None else float(value))
                ).rowcount
                for labeller_id, value in qualities.items()
            )  # fmt: skip

    def rotate_token(self, labeller_id: int) -> tuple[LabellerView, str]:
        """A new token for the labeller (shown once); the old token and every session signed in with it
        are refused from the next request. Raises NotFound."""
        token = new_token()
        with self.transaction() as s:
            labeller = s.get(Labeller, labeller_id)
            if labeller is None:
                raise NotFound(f"no labeller {labeller_id}")
            labeller.token_sha256 = hash_token(token)
            s.execute(delete(WebSession).where(WebSession.labeller_id == labeller_id))
            return _labeller_view(labeller), token

    # ------------------------------------------------------------------ queue

    def push_candidates(self, candidates: Sequence[Candidate]) -> list[int]:
        """Add tasks (with their prompts and responses, re-using stored ones); returns the task ids."""
        for index, candidate in enumerate(candidates):
            check_candidate(candidate, f"candidate {index}")
        ids = []
        with self.transaction() as s:
            for candidate in candidates:
                prompt = self._get_or_add_prompt(s, candidate.prompt)
                responses = [self._get_or_add_response(s, prompt.id, r) for r in candidate.responses]
                gold = candidate.gold_answer is not None
                task = Task(
                    project_id=self.project_id,
                    prompt_id=prompt.id,
                    kind=candidate.kind,
                    response_ids=[r.id for r in responses],
                    objective=candidate.objective,
                    priority=float(candidate.priority),
                    labels_wanted=candidate.labels_wanted,
                    min_quality=None if candidate.min_quality is None else float(candidate.min_quality),
                    is_gold=gold,
                )
                s.add(task)
                s.flush()
                if gold:
                    s.add(
                        GoldAnswer(
                            task_id=task.id,
                            answer=gold_to_ids(task.kind, candidate.gold_answer, task.response_ids),
                            explanation=candidate.explanation,
                        )
                    )
                ids.append(task.id)
        return ids

    def matching_tasks(self, candidates: Sequence[Candidate]) -> list[int | None]:
        """Per candidate, the id of a stored task of this project asking the same question (same prompt,
        responses in any order, kind, objective and gold-ness), or None."""
        digests = sorted({text_sha256(c.prompt) for c in candidates if isinstance(c.prompt, str)})
        stored: dict[tuple, int] = {}
        with self.read() as s:
            for start in range(0, len(digests), 500):  # bounded IN lists (SQLite caps bound variables)
                chunk = digests[start : start + 500]
                tasks = s.scalars(
                    select(Task)
                    .join(Prompt, Prompt.id == Task.prompt_id)
                    .where(Task.project_id == self.project_id, Prompt.text_sha256.in_(chunk))
                    .order_by(Task.id)
                ).all()
                prompt_ids = {task.prompt_id for task in tasks}
                responses = {
                    r.id: ResponseIn(r.text, r.model, r.model_version)
                    for r in s.scalars(select(Response).where(Response.prompt_id.in_(prompt_ids)))
                }
                for task in tasks:
                    twin = Candidate(
                        task.prompt.text,
                        [responses[i] for i in task.response_ids],
                        task.kind,
                        objective=task.objective,
                        gold_answer={} if task.is_gold else None,
                    )
                    stored.setdefault(task_key(twin), task.id)
        return [stored.get(task_key(c)) for c in candidates]

    def _get_or_add_prompt(self, s: Session, text: str) -> Prompt:
        digest = text_sha256(text)
        prompt = s.scalars(
            select(Prompt).where(Prompt.project_id == self.project_id, Prompt.text_sha256 == digest)
        ).first()
        if prompt is None:
            prompt = Prompt(project_id=self.project_id, text=text, text_sha256=digest)
            s.add(prompt)
            s.flush()
        return prompt

    def _get_or_add_response(self, s: Session, prompt_id: int, r: ResponseIn | str) -> Response:
        r = ResponseIn(r) if isinstance(r, str) else r
        digest = text_sha256(r.text)
        response = s.scalars(
            select(Response).where(
                Response.prompt_id == prompt_id,
                Response.text_sha256 == digest,
                Response.model == r.model,
                Response.model_version == r.model_version,
            )
        ).first()
        if response is None:
            response = Response(
                prompt_id=prompt_id,
                text=r.text,
                text_sha256=digest,
                model=r.model,
                model_version=r.model_version,
            )
            s.add(response)
            s.flush()
        return response

    def next_task(self, labeller_id: int | Token) -> TaskView | None:
        """The labeller's current task: the one they hold, else a gold task while onboarding, else the
        highest-priority open task they have not seen (reserved for them). None when there is none.
        `labeller_id` may be the labeller's `Token` (checked in the same transaction)."""
        with self.transaction() as s:
            labeller_id = _labeller_id(s, labeller_id)
            now = utcnow()
            if time.monotonic() >= self._next_release:
                # Reservations last many minutes; sweeping for lapsed ones a few times a minute is plenty.
                self._release_expired(s, now)
                self._next_release = time.monotonic() + min(5.0, self.settings.assignment_seconds / 10)
            # One statement for the labeller and the task they hold (if any): this is the hot path.
            row = s.connection().execute(_LABELLER_AND_HELD, {"labeller_id": labeller_id}).first()
            if row is None or not row.active:
                raise NotFound(f"no labeller {labeller_id}")
            if row.held_task_id is not None:
                return self._task_view(s, row.held_task_id, row.held_expires_at)
            if not row.onboarded:
                labeller = s.get(Labeller, labeller_id)
                gold = self._next_gold(s, labeller)
                if gold is not None:
                    return self._task_view(s, gold.id, self._assign(s, gold, labeller_id, now).expires_at)
                _finish_onboarding(s, labeller, self.settings.gold_accuracy_threshold)
            return self._reserve_next(s, labeller_id, row.quality, now)

    def _next_gold(self, s: Session, labeller: Labeller) -> Task | None:
        answered = s.scalar(
            select(func.count()).select_from(Assignment).join(Task, Task.id == Assignment.task_id)
            .where(Assignment.labeller_id == labeller.id, Task.is_gold)
        )  # fmt: skip
        if answered >= self.settings.onboarding_questions:
            return None
        candidates = s.scalars(
            select(Task)
            .where(Task.project_id == self.project_id, Task.is_gold, ~_seen_by(labeller.id))
            .order_by(Task.id)
        )
        for task in candidates:
            problem = gold_problem(task)
            if problem is None:
                return task
            # A malformed gold row (stored before imports were checked) would lock every new labeller
            # out: every answer to it failed and it cannot be skipped. Leave it out of onboarding.
            log.warning("gold task %s is left out of onboarding: %s", task.id, problem)
        return None

    def _reserve_next(self, s: Session, labeller_id: int, quality: float | None, now) -> TaskView | None:
        connection = s.connection()
        query = _NEXT_OPEN_POSTGRES if self.postgres else _NEXT_OPEN
        for _ in range(10):
            task_id = connection.execute(
                query, {"project_id": self.project_id, "labeller_id": labeller_id, "quality": quality}
            ).scalar()
            if task_id is None:
                return None
            # The guard that makes double assignment impossible even if two readers saw the same row.
            if connection.execute(_CLAIM, {"task_id": task_id}).rowcount == 1:
                assignment = self._assign(s, _Record(id=task_id), labeller_id, now)
                return self._task_view(s, task_id, assignment.expires_at)
        return None

    def _assign(self, s: Session, task, labeller_id: int, now) -> _Record:
        """A new active assignment of `task` (anything with an `id`) to the labeller; returns its row."""
        values = {
            "task_id": task.id,
            "labeller_id": labeller_id,
            "state": "active",
            "created_at": now,
            "expires_at": now + timedelta(seconds=self.settings.assignment_seconds),
        }
        result = s.connection().execute(insert(_ASSIGNMENTS), values)
        return _Record(id=result.inserted_primary_key[0], skip_reason=None, **values)

    def _release_expired(self, s: Session, now) -> None:
        """Give the places of abandoned reservations back to the queue (the labeller may get it again)."""
        self._release(s, select(Assignment).where(Assignment.state == "active", Assignment.expires_at < now))

    def _release(self, s: Session, query) -> None:
        """Delete the (active) assignments `query` selects, giving their places back (100 at a time)."""
        query = query.limit(100)
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        for assignment in s.scalars(query).all():
            s.execute(
                update(Task)
                .where(Task.id == assignment.task_id, Task.is_gold.is_(False))
                .values(n_assigned=Task.n_assigned - 1)
            )
            s.delete(assignment)
        s.flush()

    def _task_view(self, s: Session, task_id: int, expires_at=None) -> TaskView:
        """The task as a labeller sees it, read in one statement (the task, its prompt and the prompt's
        responses; those the task shows are picked out by id, in the task's order)."""
        rows = s.connection().execute(_TASK_WITH_RESPONSES, {"task_id": task_id}).all()
        task = rows[0]
        responses = {r.response_id: r for r in rows}
        return TaskView(
            id=task.id,
            kind=task.kind,
            prompt=task.prompt_text,
            responses=[
                ResponseView(i, responses[i].text, responses[i].model, responses[i].model_version)
                for i in task.response_ids
            ],
            objective=task.objective,
            is_gold=task.is_gold,
            expires_at=expires_at,
        )

    def get_task(self, labeller_id: int, task_id: int) -> TaskView:
        """A task the labeller holds or has answered (others' tasks do not exist for them)."""
        with self.read() as s:
            assignment = _assignment(s, task_id, labeller_id)
            if assignment is None:
                raise NotFound(f"task {task_id} not found among your tasks")
            return self._task_view(s, task_id, assignment.expires_at)

    def skip(self, labeller_id: int, task_id: int, reason: str) -> None:
        """Give a held task back with a reason; it returns to the queue for other labellers."""
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("give a reason for skipping (e.g. 'I cannot judge this topic')")
        check_text(reason, "the skip reason", MAX_COMMENT_CHARS)
        with self.transaction() as s:
            assignment = _assignment(s, task_id, labeller_id)
            if assignment is None or assignment.state != "active":
                raise NotFound(f"task {task_id} is not one you hold")
            task = s.get(Task, task_id)
            if task.is_gold:
                raise Conflict("onboarding questions cannot be skipped")
            assignment.state, assignment.skip_reason = "skipped", reason
            s.execute(update(Task).where(Task.id == task_id).values(n_assigned=Task.n_assigned - 1))

    # ------------------------------------------------------------------ labels

    def submit_label(self, labeller_id: int | Token, answer: LabelIn) -> SubmitResult:
        """Store one label in one transaction; the same (labeller, client_request_id) again is a no-op.
        `labeller_id` may be the labeller's `Token` (checked in the same transaction)."""
        check_request_id(answer.client_request_id)
        try:
            with self.transaction() as s:
                labeller_id = _labeller_id(s, labeller_id)
                return self._submit(s, labeller_id, answer)
        except (IntegrityError, Conflict) as exc:
            # A concurrent duplicate may have committed between our reads (PostgreSQL's READ COMMITTED
            # shows it to later statements): then it won the unique constraint or already moved the
            # assignment on, and the answer is what it stored.
            with self.transaction() as s:
                existing = _label_by_request(s, _labeller_id(s, labeller_id), answer.client_request_id)
                if existing is not None and existing.task_id == answer.task_id:
                    return SubmitResult(
                        _label_view(s, existing), created=False, gold=_gold_feedback(s, existing)
                    )
            if isinstance(exc, Conflict):
                raise
            raise Conflict(f"task {answer.task_id} already has your label") from None

    def _submit(self, s: Session, labeller_id: int, answer: LabelIn) -> SubmitResult:
        existing = _label_by_request(s, labeller_id, answer.client_request_id)
        if existing is not None:
            if existing.task_id != answer.task_id:
                raise Conflict(f"this client_request_id was already used for task {existing.task_id}")
            return SubmitResult(_label_view(s, existing), created=False, gold=_gold_feedback(s, existing))
        task = _task_record(s, answer.task_id)
        assignment = _assignment_record(s, answer.task_id, labeller_id)
        labeller = s.connection().execute(_LABELLER_STATE, {"labeller_id": labeller_id}).first()
        if labeller is None or not labeller.active:
            raise Forbidden(f"no active labeller {labeller_id}")
        if assignment is None or task is None or task.project_id != self.project_id:
            # Only a task the queue handed to this labeller may be answered: otherwise onboarding could
            # be skipped, tasks labelled unseen, and gold answers read by answering gold ids in turn.
            # The same reply whether the task exists, is someone else's, or is gold: ids leak nothing.
            if not labeller.onboarded:
                raise Conflict(
                    "answer your onboarding questions first (GET /api/tasks/next gives the next one)"
                )
            raise Forbidden(
                f"task {answer.task_id} is not assigned to you (or your reservation of it lapsed); "
                "ask for your next task (GET /api/tasks/next)"
            )
        if assignment.state != "active":
            raise Conflict(f"you already {assignment.state} task {task.id}")
        if not task.is_gold and not labeller.onboarded:
            raise Conflict("answer your onboarding questions first (GET /api/tasks/next gives the next one)")
        check_answer(task, answer)
        if (
            task.kind == "edit"
            and answer.edit_text.strip() == s.get(Response, task.response_ids[0]).text.strip()
        ):
            raise InvalidInput("the edited answer is the same as the response; change it or skip the task")
        now = utcnow()
        seconds = answer.seconds
        if seconds is None:
            seconds = max(0.0, (now - assignment.created_at).total_seconds())
        label = Label(
            task_id=task.id,
            labeller_id=labeller_id,
            client_request_id=answer.client_request_id,
            choice_response_id=answer.choice if task.kind == "pairwise" else None,
            strength=answer.strength,
            tie=answer.strength == "tie",
            ranking=answer.ranking,
            rating=answer.rating,
            edit_text=answer.edit_text,
            label=answer.label,
            reason=answer.reason,
            unsafe=bool(answer.unsafe),
            comment=answer.comment,
            seconds=float(seconds),
            displayed_order=answer.displayed_order,
            created_at=now,
        )
        if task.gold is not None:
            label.gold_correct = gold_correct(task, label)
            if label.gold_correct is None:
                log.warning("gold task %s left ungraded: %s", task.id, gold_problem(task))
        connection = s.connection()
        # The unique constraints fire here, before any counter moves.
        label.id = connection.execute(insert(_LABELS), _column_values(label)).inserted_primary_key[0]
        connection.execute(_LABELLED, {"assignment_id": assignment.id})
        connection.execute(_GOLD_LABELLED if task.is_gold else _TASK_LABELLED, {"task_id": task.id})
        if task.is_gold and not labeller.onboarded:
            # the last onboarding answer finishes onboarding now, so this reply and /api/me say so
            # (before, the state changed only on the next GET /api/tasks/next)
            account = s.get(Labeller, labeller_id)
            if self._next_gold(s, account) is None:
                _finish_onboarding(s, account, self.settings.gold_accuracy_threshold)
        return SubmitResult(_label_view(s, label, task), created=True, gold=_gold_feedback(s, label, task))

    def labels_of(self, labeller_id: int, limit: int = 100, offset: int = 0) -> list[LabelView]:
        with self.read() as s:
            rows = s.scalars(
                select(Label)
                .where(Label.labeller_id == labeller_id)
                .order_by(Label.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return [_label_view(s, label) for label in rows]

    def get_label(self, labeller_id: int, label_id: int) -> LabelView:
        """One of the labeller's own labels; another labeller's label is 'not found' (its id leaks nothing)."""
        with self.read() as s:
            label = s.get(Label, label_id)
            if label is None or label.labeller_id != labeller_id:
                raise NotFound(f"label {label_id} not found among your labels")
            return _label_view(s, label)

    def task_progress(self, task_ids: Sequence[int]) -> list[TaskProgress]:
        """Per task, in the order given: labels wanted, who labelled it, and the active labellers who may
        still answer it (`next_task` skips a task its labeller already has an assignment on, unless that
        assignment is the one they hold now)."""
        ids = list(task_ids)
        with self.read() as s:
            tasks = s.execute(
                select(Task.id, Task.labels_wanted, Task.min_quality).where(Task.id.in_(ids))
            ).all()
            wanted = {task.id: task.labels_wanted for task in tasks}
            floor = {task.id: task.min_quality for task in tasks}
            active = s.execute(
                select(Labeller.id, Labeller.name, Labeller.quality)
                .where(Labeller.active)
                .order_by(Labeller.name)
            ).all()
            seen = s.execute(
                select(Assignment.task_id, Assignment.labeller_id, Assignment.state).where(
                    Assignment.task_id.in_(ids)
                )
            ).all()
            labelled = s.execute(
                select(Label.task_id, Labeller.name).join(Labeller, Labeller.id == Label.labeller_id)
                .where(Label.task_id.in_(ids)).order_by(Label.id)
            ).all()  # fmt: skip
        finished = {(task, who) for task, who, state in seen if state != "active"}  # labelled or skipped
        names: dict[int, list[str]] = {i: [] for i in ids}
        for task, name in labelled:
            names[task].append(name)
        return [
            TaskProgress(
                i,
                wanted[i],
                tuple(names[i]),
                tuple(
                    name
                    for who, name, quality in active
                    if (i, who) not in finished and _reaches(quality, floor[i])
                ),
            )  # fmt: skip
            for i in ids
            if i in wanted
        ]

    def count_labels(self, task_ids: Sequence[int] | None = None) -> int:
        """Labels stored, all of them or those answering `task_ids`."""
        query = select(func.count()).select_from(Label)
        if task_ids is not None:
            query = query.where(Label.task_id.in_(list(task_ids)))
        with self.read() as s:
            return s.scalar(query)


# ---------------------------------------------------------------------- helpers


def _reaches(quality: float | None, floor: float | None) -> bool:
    """Whether a labeller of this quality may get a task with this floor (as `next_task` decides)."""
    return floor is None or (quality is not None and quality >= floor)


def _seen_by(labeller_id: int):
    return exists().where(Assignment.task_id == Task.id, Assignment.labeller_id == labeller_id)


# ---------------------------------------------------------------------- the hot path's statements
# `next_task`, `submit_label` and `labeller_by_token` run on every labelling request. They use these
# Core statements, built once (values are bind parameters, so SQLAlchemy compiles each once per engine),
# instead of ORM loads and flushes: about 0.1 ms a statement instead of 0.3-0.5 ms, and fewer statements.

_TASKS, _PROMPTS, _RESPONSES, _GOLD = (m.__table__ for m in (Task, Prompt, Response, GoldAnswer))
_LABELLERS, _ASSIGNMENTS, _LABELS = (m.__table__ for m in (Labeller, Assignment, Label))
_ROOM = _TASKS.c.n_labels + _TASKS.c.n_assigned < _TASKS.c.labels_wanted

_LABELLER_STATE = select(_LABELLERS.c.active, _LABELLERS.c.onboarded).where(
    _LABELLERS.c.id == bindparam("labeller_id")
)
_LABELLER_BY_TOKEN = select(_LABELLERS).where(
    _LABELLERS.c.token_sha256 == bindparam("digest"), _LABELLERS.c.active
)
_LABELLER_ID_BY_TOKEN = select(_LABELLERS.c.id).where(
    _LABELLERS.c.token_sha256 == bindparam("digest"), _LABELLERS.c.active
)
# The labeller and the task they hold, if any (their oldest active assignment).
_LABELLER_AND_HELD = (
    select(
        _LABELLERS.c.active,
        _LABELLERS.c.onboarded,
        _LABELLERS.c.quality,
        _ASSIGNMENTS.c.task_id.label("held_task_id"),
        _ASSIGNMENTS.c.expires_at.label("held_expires_at"),
    )
    .select_from(
        _LABELLERS.outerjoin(
            _ASSIGNMENTS,
            and_(_ASSIGNMENTS.c.labeller_id == _LABELLERS.c.id, _ASSIGNMENTS.c.state == "active"),
        )
    )
    .where(_LABELLERS.c.id == bindparam("labeller_id"))
    .order_by(_ASSIGNMENTS.c.id)
    .limit(1)
)
# The queue's head for a labeller, read off ix_task_queue in its order (priority DESC, id).
_NEXT_OPEN = (
    select(_TASKS.c.id)
    .where(
        _TASKS.c.project_id == bindparam("project_id"),
        _TASKS.c.status == "open",
        _TASKS.c.is_gold.is_(False),
        _ROOM,
        # NULL quality (not yet estimated) compares as unknown: only tasks without a floor
        or_(_TASKS.c.min_quality.is_(None), _TASKS.c.min_quality <= bindparam("quality")),
        ~exists().where(
            _ASSIGNMENTS.c.task_id == _TASKS.c.id, _ASSIGNMENTS.c.labeller_id == bindparam("labeller_id")
        ),
    )
    .order_by(_TASKS.c.priority.desc(), _TASKS.c.id)
    .limit(1)
)
_NEXT_OPEN_POSTGRES = _NEXT_OPEN.with_for_update(skip_locked=True, of=_TASKS)
_CLAIM = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"), _ROOM)
    .values(n_assigned=_TASKS.c.n_assigned + 1)
)
# A task as shown: one row per response of its prompt (the task's own are picked out by id).
_TASK_WITH_RESPONSES = (
    select(
        _TASKS.c.id,
        _TASKS.c.kind,
        _TASKS.c.response_ids,
        _TASKS.c.objective,
        _TASKS.c.is_gold,
        _PROMPTS.c.text.label("prompt_text"),
        _RESPONSES.c.id.label("response_id"),
        _RESPONSES.c.text,
        _RESPONSES.c.model,
        _RESPONSES.c.model_version,
    )
    .select_from(
        _TASKS.join(_PROMPTS, _PROMPTS.c.id == _TASKS.c.prompt_id).join(
            _RESPONSES, _RESPONSES.c.prompt_id == _TASKS.c.prompt_id
        )
    )
    .where(_TASKS.c.id == bindparam("task_id"))
)
_TASK_AND_GOLD = (
    select(
        _TASKS,
        _GOLD.c.task_id.label("gold_task_id"),
        _GOLD.c.answer.label("gold_answer"),
        _GOLD.c.explanation.label("gold_explanation"),
    )
    .select_from(_TASKS.outerjoin(_GOLD, _GOLD.c.task_id == _TASKS.c.id))
    .where(_TASKS.c.id == bindparam("task_id"))
)
_ASSIGNMENT = select(_ASSIGNMENTS).where(
    _ASSIGNMENTS.c.task_id == bindparam("task_id"), _ASSIGNMENTS.c.labeller_id == bindparam("labeller_id")
)
_LABEL_BY_REQUEST = select(_LABELS).where(
    _LABELS.c.labeller_id == bindparam("labeller_id"), _LABELS.c.client_request_id == bindparam("request_id")
)
_LABELLED = (
    update(_ASSIGNMENTS).where(_ASSIGNMENTS.c.id == bindparam("assignment_id")).values(state="labelled")
)
_GOLD_LABELLED = (
    update(_TASKS).where(_TASKS.c.id == bindparam("task_id")).values(n_labels=_TASKS.c.n_labels + 1)
)
_TASK_LABELLED = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values(
        n_assigned=_TASKS.c.n_assigned - 1,
        n_labels=_TASKS.c.n_labels + 1,
        status=case((_TASKS.c.n_labels + 1 >= _TASKS.c.labels_wanted, "done"), else_="open"),
    )
)


class _Record(SimpleNamespace):
    """A row read with Core, its columns as attributes (what the checks and views read off a model)."""


def _labeller_id(s: Session, labeller: int | Token) -> int:
    """The id of the labeller, given as an id or as a `Token` (raises Unauthenticated when no active
    labeller holds that token)."""
    if not isinstance(labeller, Token):
        return labeller
    found = None
    if 0 < len(labeller) <= 200:
        found = s.connection().execute(_LABELLER_ID_BY_TOKEN, {"digest": hash_token(labeller)}).scalar()
    if found is None:
        raise Unauthenticated("missing or invalid token: send 'Authorization: Bearer TOKEN'")
    return found


def _task_record(s: Session, task_id: int) -> _Record | None:
    """The task's columns, and `gold` (its `answer` and `explanation`) or None; None for no such task."""
    row = s.connection().execute(_TASK_AND_GOLD, {"task_id": task_id}).first()
    if row is None:
        return None
    values = dict(row._mapping)
    gold_task_id, answer, explanation = (
        values.pop(k) for k in ("gold_task_id", "gold_answer", "gold_explanation")
    )
    gold = None if gold_task_id is None else _Record(answer=answer, explanation=explanation)
    return _Record(**values, gold=gold)


def _assignment_record(s: Session, task_id: int, labeller_id: int) -> _Record | None:
    row = s.connection().execute(_ASSIGNMENT, {"task_id": task_id, "labeller_id": labeller_id}).first()
    return None if row is None else _Record(**row._mapping)


def _column_values(label: Label) -> dict:
    """A (transient) Label's values for a Core INSERT, the id left to the database."""
    return {c.key: getattr(label, c.key) for c in _LABELS.c if c.key != "id"}


def _assignment(s: Session, task_id: int, labeller_id: int) -> Assignment | None:
    return s.scalars(
        select(Assignment).where(Assignment.task_id == task_id, Assignment.labeller_id == labeller_id)
    ).first()


def _label_by_request(s: Session, labeller_id: int, request_id: str):
    """The labeller's label with this client request id (a row with the columns of `labels`), or None."""
    return (
        s.connection()
        .execute(_LABEL_BY_REQUEST, {"labeller_id": labeller_id, "request_id": request_id})
        .first()
    )


def _finish_onboarding(s: Session, labeller: Labeller, threshold: float) -> None:
    graded = s.scalars(
        select(Label.gold_correct).where(Label.labeller_id == labeller.id, Label.gold_correct.is_not(None))
    ).all()
    labeller.onboarded = True
    labeller.flagged = bool(graded) and sum(graded) / len(graded) < threshold


def _labeller_view(labeller: Labeller) -> LabellerView:
    return LabellerView(
        labeller.id,
        labeller.name,
        labeller.role,
        labeller.onboarded,
        labeller.flagged,
        labeller.active,
        labeller.quality,
    )


def _label_view(s: Session, label: Label, task: Task | None = None) -> LabelView:
    task = task or s.get(Task, label.task_id)
    return LabelView(
        id=label.id,
        task_id=label.task_id,
        labeller_id=label.labeller_id,
        client_request_id=label.client_request_id,
        kind=task.kind,
        choice=label.choice_response_id,
        strength=label.strength,
        tie=label.tie,
        ranking=label.ranking,
        rating=label.rating,
        edit_text=label.edit_text,
        unsafe=label.unsafe,
        comment=label.comment,
        seconds=label.seconds,
        displayed_order=label.displayed_order,
        created_at=label.created_at,
        label=label.label,
        reason=label.reason,
    )


def _gold_feedback(s: Session, label: Label, task: Task | None = None) -> GoldFeedback | None:
    task = task or s.get(Task, label.task_id)
    if task.gold is None or label.gold_correct is None:  # not gold, or a malformed gold left ungraded
        return None
    return GoldFeedback(bool(label.gold_correct), dict(task.gold.answer), task.gold.explanation)
