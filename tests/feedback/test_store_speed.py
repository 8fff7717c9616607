"""What the store does per labelling request: how many statements, and how much SQLite reads for them.

`next_task` and `submit_label` run on every request of every labeller. Their cost must not grow with
the queue (open tasks) or with a labeller's history (labelled assignments, lapsed ones included), and
they must not issue more statements than the work needs. Work is counted, not timed: statements via
SQLAlchemy's cursor events, and SQLite's virtual-machine steps via its progress handler.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, insert, select

from rlhf.feedback.models import Assignment, Label, Prompt, Task, utcnow
from rlhf.feedback.store import Candidate, LabelIn


def pairs(n: int, start: int = 0) -> list[Candidate]:
    return [
        Candidate(f"User: q {i}?\nAssistant:", [f"a {i} one", f"a {i} two"]) for i in range(start, start + n)
    ]


class Statements:
    """The SQL statements an engine runs while counting (transaction control aside)."""

    def __init__(self, engine):
        self.seen: list[str] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        verb = statement.split(None, 1)[0].upper()
        if self.on and verb not in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.seen.append(verb)

    def count(self, call):
        self.seen, self.on = [], True
        try:
            result = call()
        finally:
            self.on = False
        return result, list(self.seen)


def test_a_label_takes_few_statements(make_store):
    """next_task: the labeller and their held task (1), the queue's head (2), the claim (3), the
    reservation (4), the task with its responses (5); it took 7 with ORM loads. The token lookup is one
    SELECT. submit_label: the request id, the task with its gold answer, the assignment (and the
    labeller, for authorization) are read, then the label inserted and the two counters updated."""
    store = make_store()
    store.push_candidates(pairs(20))
    ann, token = store.add_labeller("ann", onboarded=True)
    statements = Statements(store.engine)
    store.submit_label(ann.id, answer(store.next_task(ann.id), "r0"))
    store._next_release = float("inf")  # no sweep for lapsed reservations in the calls counted

    task, seen = statements.count(lambda: store.next_task(ann.id))
    assert task is not None and len(seen) <= 5, seen
    _, seen = statements.count(lambda: store.labeller_by_token(token))
    assert seen == ["SELECT"]
    result, seen = statements.count(lambda: store.submit_label(ann.id, answer(task, "r1")))
    assert result.created and seen.count("SELECT") <= 4 and len(seen) <= 7, seen


def answer(task, request_id: str) -> LabelIn:
    return LabelIn(task.id, request_id, choice=task.responses[0].id, strength="better")


def vm_steps(store, call) -> int:
    """SQLite virtual-machine instructions (in units of 10) that `call` makes the database run."""
    steps = [0]

    def tick():
        steps[0] += 1
        return 0  # go on

    def attach(conn, cursor, statement, parameters, context, executemany):
        conn.connection.driver_connection.set_progress_handler(tick, 10)

    event.listen(store.engine, "before_cursor_execute", attach)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", attach)
    return steps[0]


def add_history(store, labeller_id: int, n: int) -> None:
    """n finished tasks the labeller answered long ago: labelled assignments whose reservation time is
    long past (what a labeller who has been working for weeks leaves behind)."""
    old = utcnow() - timedelta(days=30)
    with store.transaction() as s:
        prompt_id = s.scalar(select(Prompt.id).limit(1))
        c = s.connection()
        first = c.execute(
            insert(Task).returning(Task.id),
            [
                dict(project_id=store.project_id, prompt_id=prompt_id, kind="pairwise", response_ids=[1, 2],
                     priority=0.0, labels_wanted=1, n_assigned=0, n_labels=1, status="done", is_gold=False,
                     created_at=old)
                for _ in range(n)
            ],
        ).scalars().all()  # fmt: skip
        c.execute(
            insert(Assignment),
            [dict(task_id=t, labeller_id=labeller_id, state="labelled", created_at=old, expires_at=old) for t in first],
        )  # fmt: skip
        c.execute(
            insert(Label),
            [dict(task_id=t, labeller_id=labeller_id, client_request_id=f"old-{t}", choice_response_id=1,
                  strength="better", tie=False, unsafe=False, created_at=old) for t in first],
        )  # fmt: skip


def test_next_task_does_not_grow_with_the_queue_or_the_history(tmp_path):
    """The same call on a queue of 10 open tasks and on one of 2,000 (all of the same priority, the
    default), for a labeller with no history and for one with 2,000 old labels (SQLite: its VM counts
    the work). Before the queue index was in the queue's order (priority DESC, id), SQLite sorted every
    open task on every call; before the assignment indexes led with state, the held-task lookup and the
    sweep for lapsed reservations read the labeller's (everyone's) whole history."""
    from rlhf.feedback.store import FeedbackStore

    def cost(n_open: int, n_history: int) -> int:
        store = FeedbackStore(f"sqlite:///{tmp_path / f'{n_open}-{n_history}.db'}")
        store.push_candidates(pairs(n_open))
        ann, _ = store.add_labeller("ann", onboarded=True)
        if n_history:
            add_history(store, ann.id, n_history)

        def call():
            store._next_release = 0.0  # make this call sweep for lapsed reservations too
            assert store.next_task(ann.id) is not None

        call()  # warm: compile the statements once
        with store.transaction() as s:  # give the task back, so the measured call reserves again
            s.query(Assignment).filter(Assignment.state == "active").delete()
            s.query(Task).update({Task.n_assigned: 0})
        try:
            return vm_steps(store, call)
        finally:
            store.close()

    small = cost(10, 0)
    assert cost(2000, 0) < 2 * small, "the queue head is sorted (or scanned) on every call"
    assert cost(10, 2000) < 2 * small, "the labeller's history (or every lapsed assignment) is read"
