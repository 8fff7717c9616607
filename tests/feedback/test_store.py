"""The feedback store on SQLite and PostgreSQL: schema, tokens, the queue, idempotent labels, onboarding."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from rlhf.feedback.models import Base, Label, Labeller
from rlhf.feedback.store import (
    Candidate,
    Conflict,
    Forbidden,
    InvalidInput,
    LabelIn,
    NotFound,
    StoreSettings,
    Token,
    Unauthenticated,
    hash_token,
)


def pairs(n: int, **kw) -> list[Candidate]:
    return [
        Candidate(f"User: question {i}?\nAssistant:", [f"answer {i} a", f"answer {i} b"], **kw)
        for i in range(n)
    ]


def answer_pair(task, request_id="r1", strength="better") -> LabelIn:
    return LabelIn(task.id, request_id, choice=task.responses[0].id, strength=strength)


def test_schema_matches_models_and_reopens(make_store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = make_store()
    with store.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diffs == [], "models.py and the migrations disagree; add a revision"
        assert connection.execute(text("select version_num from alembic_version")).scalar() == "0004"
    store.push_candidates(pairs(1))
    again = make_store()  # a second open of an existing database migrates nothing and keeps the rows
    assert again.project_id == store.project_id
    labeller, _ = again.add_labeller("ann", onboarded=True)
    assert again.next_task(labeller.id) is not None


def test_tokens_are_stored_hashed(make_store):
    store = make_store()
    labeller, token = store.add_labeller("ann")
    assert len(token) > 40 and token.startswith("rlhf_")
    with store.transaction() as s:
        row = s.get(Labeller, labeller.id)
        assert row.token_sha256 == hash_token(token) and token not in row.token_sha256
    assert store.labeller_by_token(token).name == "ann"
    assert store.labeller_by_token(token + "x") is None
    assert store.labeller_by_token("") is None
    with pytest.raises(Conflict, match="already exists"):
        store.add_labeller("ann")
    with pytest.raises(InvalidInput, match="a labeller name is"):
        store.add_labeller("bad name!")


def test_a_token_stands_for_its_labeller_only_while_it_is_valid(make_store):
    """next_task / submit_label take the labeller's Token (the web app's path): checked in the same
    transaction as the work, refused once wrong, rotated or revoked, and changing nothing then."""
    store = make_store()
    store.push_candidates(pairs(3))
    ann, token = store.add_labeller("ann", onboarded=True)
    task = store.next_task(Token(token))
    assert task is not None and store.next_task(ann.id).id == task.id  # the same labeller's held task
    result = store.submit_label(Token(token), answer_pair(task))
    assert result.created and result.label.task_id == task.id
    assert store.labels_of(ann.id)[0].id == result.label.id  # stored as ann's
    assert not store.submit_label(Token(token), answer_pair(task)).created  # a retry, found by token too
    held = store.next_task(Token(token))
    for bad in ("", "rlhf_wrong", token + "x", "x" * 201):
        with pytest.raises(Unauthenticated, match="invalid token"):
            store.next_task(Token(bad))
        with pytest.raises(Unauthenticated):
            store.submit_label(Token(bad), answer_pair(held, "r2"))
    _, new = store.rotate_token(ann.id)
    with pytest.raises(Unauthenticated):
        store.next_task(Token(token))  # the old token
    assert store.next_task(Token(new)).id == held.id
    store.set_active(ann.id, False)
    with pytest.raises(Unauthenticated):
        store.submit_label(Token(new), answer_pair(held, "r3"))
    assert store.count_labels() == 1


def test_queue_order_reservation_and_no_repeat(make_store):
    store = make_store()
    low, high, mid = store.push_candidates(
        [
            *pairs(1, priority=0.1),
            *[Candidate("User: hi\nAssistant:", ["x", "y"], priority=0.9)],
            *pairs(1, priority=0.5),
        ]
    )
    # (the first and third prompts are the same text, so the store re-uses the prompt and responses)
    ann = store.add_labeller("ann", onboarded=True)[0]
    bob = store.add_labeller("bob", onboarded=True)[0]
    first = store.next_task(ann.id)
    assert first.id == high
    assert store.next_task(ann.id).id == high  # the held task again, not a new one
    assert store.next_task(bob.id).id == mid  # high is reserved for ann
    store.submit_label(ann.id, answer_pair(first))
    assert store.next_task(ann.id).id == low
    assert store.next_task(bob.id).id == mid


def test_labels_wanted_gives_distinct_labellers(make_store):
    store = make_store()
    (task_id,) = store.push_candidates(pairs(1, labels_wanted=2))
    a, b, c = (store.add_labeller(n, onboarded=True)[0] for n in ("a", "b", "c"))
    assert store.next_task(a.id).id == task_id
    assert store.next_task(b.id).id == task_id
    assert store.next_task(c.id) is None  # both places are taken
    task = store.get_task(a.id, task_id)
    store.submit_label(a.id, answer_pair(task, "x"))
    store.submit_label(b.id, LabelIn(task_id, "y", strength="tie"))
    assert store.next_task(c.id) is None
    assert store.next_task(a.id) is None  # never the same task twice


def test_double_submission_is_stored_once(make_store):
    store = make_store()
    store.push_candidates(pairs(2))
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    first = store.submit_label(ann.id, answer_pair(task, "req-1"))
    again = store.submit_label(ann.id, answer_pair(task, "req-1"))
    assert first.created and not again.created and again.label.id == first.label.id
    assert store.count_labels() == 1
    with pytest.raises(Conflict, match="already labelled"):
        store.submit_label(ann.id, answer_pair(task, "req-2"))
    other = store.next_task(ann.id)
    with pytest.raises(Conflict, match="already used for task"):
        store.submit_label(ann.id, answer_pair(other, "req-1"))


def test_concurrent_duplicates_store_one_label(make_store):
    store = make_store()
    store.push_candidates(pairs(1))
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    results, errors = [], []

    def submit():
        try:
            results.append(store.submit_label(ann.id, answer_pair(task, "same-request")))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.created for r in results) == 1 and len({r.label.id for r in results}) == 1
    assert store.count_labels() == 1


def test_concurrent_labellers_never_share_a_task(make_store):
    store = make_store()
    n_tasks, n_labellers = 60, 6
    store.push_candidates(pairs(n_tasks))
    labellers = [store.add_labeller(f"l{i}", onboarded=True)[0] for i in range(n_labellers)]
    seen: dict[int, list[int]] = {}
    errors = []
    lock = threading.Lock()

    def work(labeller):
        try:
            while (task := store.next_task(labeller.id)) is not None:
                with lock:
                    seen.setdefault(task.id, []).append(labeller.id)
                store.submit_label(labeller.id, answer_pair(task, f"{labeller.id}-{task.id}"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lab,)) for lab in labellers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) == n_tasks and all(len(who) == 1 for who in seen.values())
    with store.transaction() as s:
        per_task = s.execute(select(Label.task_id, func.count()).group_by(Label.task_id)).all()
    assert len(per_task) == n_tasks and {count for _, count in per_task} == {1}


@pytest.mark.parametrize(
    "kind,responses,bad,message",
    [
        ("ranking", 3, {"ranking": "dup"}, "not a permutation"),
        ("ranking", 3, {"ranking": "short"}, "not a permutation"),
        ("pairwise", 2, {"choice": 999_999, "strength": "better"}, "preferred response"),
        ("pairwise", 2, {"choice": None, "strength": "hugely"}, "strength must be"),
        ("pairwise", 2, {"strength": "tie", "rating": 3}, "does not apply"),
        ("rating", 1, {"rating": 8}, "from 1 to 7"),
        ("edit", 1, {"edit_text": "   "}, "non-empty"),
        ("edit", 1, {"edit_text": "x" * 20_001}, "the limit is 20,000"),
        ("edit", 1, {"edit_text": "response 0"}, "same as the response"),
    ],
)
def test_bad_answers_are_refused_clearly(make_store, kind, responses, bad, message):
    store = make_store()
    store.push_candidates(
        [Candidate("User: p\nAssistant:", [f"response {i}" for i in range(responses)], kind=kind)]
    )
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    ids = [r.id for r in task.responses]
    if bad.get("ranking") == "dup":
        bad = {"ranking": [ids[0], ids[0], ids[1]]}
    elif bad.get("ranking") == "short":
        bad = {"ranking": ids[:2]}
    with pytest.raises(InvalidInput, match=message):
        store.submit_label(ann.id, LabelIn(task.id, "r", **bad))
    assert store.count_labels() == 0


def test_bad_candidates_are_refused(make_store):
    store = make_store()
    with pytest.raises(InvalidInput, match="candidate 1: a pairwise task needs 2 responses"):
        store.push_candidates([*pairs(1), Candidate("p", ["a", "b", "c"])])
    with pytest.raises(InvalidInput, match="permutation"):
        store.push_candidates(
            [Candidate("p", ["a", "b", "c"], kind="ranking", gold_answer={"ranking": [0, 0, 1]})]
        )
    with pytest.raises(InvalidInput, match="kind 'vote'"):
        store.push_candidates([Candidate("p", ["a", "b"], kind="vote")])


def test_skip_returns_the_task_to_others(make_store):
    store = make_store()
    (task_id,) = store.push_candidates(pairs(1))
    ann = store.add_labeller("ann", onboarded=True)[0]
    bob = store.add_labeller("bob", onboarded=True)[0]
    assert store.next_task(ann.id).id == task_id
    with pytest.raises(InvalidInput, match="reason"):
        store.skip(ann.id, task_id, "  ")
    store.skip(ann.id, task_id, "I cannot judge code")
    assert store.next_task(ann.id) is None
    assert store.next_task(bob.id).id == task_id
    with pytest.raises(NotFound):
        store.skip(ann.id, task_id, "again")


def test_abandoned_reservation_expires(make_store):
    store = make_store(StoreSettings(assignment_seconds=0))
    (task_id,) = store.push_candidates(pairs(1))
    ann = store.add_labeller("ann", onboarded=True)[0]
    bob = store.add_labeller("bob", onboarded=True)[0]
    assert store.next_task(ann.id).id == task_id
    assert store.next_task(bob.id).id == task_id  # ann's reservation lapsed
    store.submit_label(bob.id, LabelIn(task_id, "b", strength="tie"))
    # ann's late answer: her reservation lapsed and went to bob, so the task is no longer hers
    with pytest.raises(Forbidden, match="not assigned to you"):
        store.submit_label(ann.id, LabelIn(task_id, "a", strength="tie"))


def _gold(store):
    return store.push_candidates(
        [
            Candidate("User: capital of France?\nAssistant:", ["Paris.", "Rome."], gold_answer={"choice": 0},
                      explanation="Paris is the capital."),
            Candidate("User: 2+2?\nAssistant:", ["5", "4", "22"], kind="ranking", gold_answer={"ranking": [1, 2, 0]},
                      explanation="4 is right; 22 at least uses the digits."),
        ]
    )  # fmt: skip


@pytest.mark.parametrize("right", [True, False])
def test_onboarding_grades_gold_and_flags(make_store, right):
    store = make_store(StoreSettings(gold_accuracy_threshold=0.75))
    gold_pair, gold_rank = _gold(store)
    (real,) = store.push_candidates(pairs(1, priority=5))
    ann = store.add_labeller("ann")[0]
    task = store.next_task(ann.id)
    assert task.id == gold_pair and task.is_gold
    paris, rome = (r.id for r in task.responses)
    result = store.submit_label(
        ann.id, LabelIn(task.id, "g1", choice=paris if right else rome, strength="better")
    )
    assert result.gold.correct is right and result.gold.explanation == "Paris is the capital."
    task = store.next_task(ann.id)
    assert task.id == gold_rank
    five, four, twenty_two = (r.id for r in task.responses)
    result = store.submit_label(ann.id, LabelIn(task.id, "g2", ranking=[four, twenty_two, five]))
    assert result.gold.correct and result.gold.expected == {"ranking": [four, twenty_two, five]}
    assert store.next_task(ann.id).id == real  # onboarding over
    me = store.get_labeller(ann.id)
    assert me.onboarded and me.flagged is (not right)  # 1/2 = 0.5 < 0.75


def test_other_labellers_things_are_not_found(make_store):
    store = make_store()
    store.push_candidates(pairs(2))
    ann = store.add_labeller("ann", onboarded=True)[0]
    bob = store.add_labeller("bob", onboarded=True)[0]
    task = store.next_task(ann.id)
    label = store.submit_label(ann.id, answer_pair(task)).label
    with pytest.raises(NotFound):
        store.get_label(bob.id, label.id)
    with pytest.raises(NotFound):
        store.get_task(bob.id, task.id)
    with pytest.raises(Forbidden):  # bob cannot answer ann's finished task either
        store.submit_label(bob.id, answer_pair(task, "b"))
    assert store.labels_of(bob.id) == [] and [x.id for x in store.labels_of(ann.id)] == [label.id]


def test_nul_characters_and_malformed_gold_are_refused(make_store):
    """PostgreSQL cannot store NUL in text; both backends refuse it the same way, with a message."""
    store = make_store()
    for bad in [
        Candidate("p\x00", ["a", "b"]),
        Candidate("p", ["a", "b\x00"]),
        Candidate("p", ["a", "b"], objective=5),
        Candidate("p", ["a", "b", "c"], kind="ranking", gold_answer={"ranking": [0, "1", 2]}),
        Candidate("p", ["a", "b"], gold_answer={"choice": "0"}),
        Candidate("p", ["a"], kind="rating", gold_answer={"rating": True}),
    ]:
        with pytest.raises(InvalidInput):
            store.push_candidates([bad])
    store.push_candidates([Candidate("p", ["old"], kind="edit")])
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    for answer in [
        LabelIn(task.id, "r", edit_text="new\x00"),
        LabelIn(task.id, "r\x00", edit_text="new"),
        LabelIn(task.id, "r", edit_text="new", comment="c\x00"),
    ]:
        with pytest.raises(InvalidInput, match="NUL|client_request_id"):
            store.submit_label(ann.id, answer)
    with pytest.raises(InvalidInput, match="NUL"):
        store.skip(ann.id, task.id, "why\x00")
    assert store.submit_label(ann.id, LabelIn(task.id, "r", edit_text="new")).created
