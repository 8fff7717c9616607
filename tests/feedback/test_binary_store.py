"""Binary (thumbs up / down) tasks in the feedback store, on SQLite and PostgreSQL: answers, gold
grading, refusals, and the 0003 migration upgrading a database that already holds labels."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from rlhf.feedback.store import Candidate, InvalidInput, LabelIn, StoreSettings


def binary(n: int, **kw) -> list[Candidate]:
    return [Candidate(f"User: q{i}?\nAssistant:", [f"answer {i}"], kind="binary", **kw) for i in range(n)]


def test_binary_answer_is_stored_and_read_back(make_store):
    store = make_store()
    store.push_candidates(binary(2))
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    assert task.kind == "binary" and len(task.responses) == 1
    result = store.submit_label(ann.id, LabelIn(task.id, "r1", label=False, reason="  off topic "))
    assert result.created and result.label.label is False and result.label.reason == "  off topic "
    again = store.submit_label(ann.id, LabelIn(task.id, "r1", label=False))  # a retry: stored once
    assert not again.created and again.label.id == result.label.id and again.label.label is False
    task = store.next_task(ann.id)
    good = store.submit_label(ann.id, LabelIn(task.id, "r2", label=True)).label
    assert good.label is True and good.reason is None and good.rating is None and good.choice is None
    assert [x.label for x in store.labels_of(ann.id)] == [True, False]


@pytest.mark.parametrize(
    "bad,message",
    [
        ({}, "label must be true"),
        ({"label": 1}, "label must be true"),
        ({"label": "yes"}, "label must be true"),
        ({"label": True, "rating": 3}, "rating does not apply to a binary task"),
        ({"label": True, "reason": "   "}, "reason must be non-empty"),
        ({"label": True, "reason": "x" * 2_001}, "the limit is 2,000"),
    ],
)
def test_bad_binary_answers_are_refused(make_store, bad, message):
    store = make_store()
    store.push_candidates(binary(1))
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    with pytest.raises(InvalidInput, match=message):
        store.submit_label(ann.id, LabelIn(task.id, "r", **bad))
    assert store.count_labels() == 0


def test_label_and_reason_do_not_apply_to_other_kinds(make_store):
    store = make_store()
    store.push_candidates([Candidate("p", ["a"], kind="rating")])
    ann = store.add_labeller("ann", onboarded=True)[0]
    task = store.next_task(ann.id)
    with pytest.raises(InvalidInput, match="label does not apply to a rating task"):
        store.submit_label(ann.id, LabelIn(task.id, "r", rating=3, label=True))


@pytest.mark.parametrize(
    "candidate,message",
    [
        (Candidate("p", ["a", "b"], kind="binary"), "a binary task needs 1 response, got 2"),
        (Candidate("p", ["a"], kind="binary", gold_answer={"label": 1}), "gold 'label' must be true"),
        (Candidate("p", ["a"], kind="binary", gold_answer={"rating": 3}), "field 'rating' does not apply"),
    ],
)
def test_bad_binary_candidates_are_refused(make_store, candidate, message):
    with pytest.raises(InvalidInput, match=message):
        make_store().push_candidates([candidate])


@pytest.mark.parametrize("right", [True, False])
def test_binary_gold_is_right_when_equal(make_store, right):
    store = make_store(StoreSettings(gold_accuracy_threshold=0.5))
    gold_ids = store.push_candidates(
        binary(1, gold_answer={"label": False}, explanation="The answer is wrong: 2+2 is 4.")
    )
    (real,) = store.push_candidates(binary(1, priority=1.0))
    ann = store.add_labeller("ann")[0]
    task = store.next_task(ann.id)
    assert task.id == gold_ids[0] and task.is_gold
    result = store.submit_label(ann.id, LabelIn(task.id, "g", label=not right))
    assert result.gold.correct is right and result.gold.expected == {"label": False}
    assert result.gold.explanation == "The answer is wrong: 2+2 is 4."
    assert store.next_task(ann.id).id == real  # onboarding over
    assert store.get_labeller(ann.id).flagged is (not right)  # 1/1 or 0/1 against 0.5


def test_upgrade_from_0002_keeps_rows_and_adds_binary(make_store):
    """A database made by 0001 + 0002 and holding labels upgrades to 0003 without losing a row; the old
    labels read label/reason as NULL, and binary tasks work at once."""
    from alembic import command
    from alembic.config import Config

    from rlhf.feedback.db import MIGRATIONS, make_engine

    url, kw = make_store.url, make_store.engine_kw
    engine = make_engine(url, **kw)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    # rows written with the 0002 schema, by plain SQL (today's models have columns 0002 lacks)
    with engine.begin() as c:
        c.execute(
            text(
                "insert into projects (id, name, guidelines, created_at) values (1, 'default', '', '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into prompts (id, project_id, text, text_sha256, created_at) "
                "values (1, 1, 'User: hi\nAssistant:', 'x', '2026-01-01')"
            )
        )
        for i in (1, 2):
            c.execute(
                text(
                    "insert into responses (id, prompt_id, text, text_sha256, model, model_version, "
                    f"created_at) values ({i}, 1, 'r{i}', 'h{i}', '', '', '2026-01-01')"
                )
            )
        c.execute(
            text(
                "insert into labellers (id, name, role, token_sha256, onboarded, flagged, active, "
                "created_at) values (1, 'ann', 'labeller', 't', true, false, true, '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into tasks (id, project_id, prompt_id, kind, response_ids, objective, priority, "
                "labels_wanted, n_assigned, n_labels, status, is_gold, created_at) values "
                "(1, 1, 1, 'pairwise', '[1, 2]', null, 0, 1, 0, 1, 'done', false, '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into labels (id, task_id, labeller_id, client_request_id, choice_response_id, "
                "strength, tie, unsafe, comment, seconds, created_at) values "
                "(1, 1, 1, 'old', 2, 'better', false, false, 'kept', 12.5, '2026-01-01')"
            )
        )
        if make_store.backend == "postgres":  # explicit ids leave the id sequences behind
            for table in ("projects", "prompts", "responses", "labellers", "tasks", "labels"):
                c.execute(
                    text(
                        f"select setval(pg_get_serial_sequence('{table}', 'id'), (select max(id) from {table}))"
                    )
                )
    engine.dispose()  # fmt: skip

    store = make_store()  # opening migrates to head
    with store.engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0004"
        row = c.execute(text("select choice_response_id, strength, comment, seconds, label, reason "
                             "from labels where id = 1")).one()  # fmt: skip
    assert tuple(row) == (2, "better", "kept", 12.5, None, None)
    (old,) = store.labels_of(1)
    assert old.choice == 2 and old.label is None
    store.push_candidates(binary(1))
    task = store.next_task(1)
    assert store.submit_label(1, LabelIn(task.id, "new", label=True)).label.label is True
    assert store.count_labels() == 2
