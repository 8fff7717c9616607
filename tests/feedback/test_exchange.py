"""Import of prompts/responses and export of labels to files that `rlhf.data.load_preferences` reads."""

from __future__ import annotations

import json

import pytest

from rlhf.data import load_preferences
from rlhf.errors import UserError
from rlhf.feedback.exchange import export_file, import_file
from rlhf.feedback.store import LabelIn

ROWS = [
    {"prompt": "User: tea?\nAssistant:", "responses": ["A drink.", {"text": "Go away.", "model": "m", "model_version": "v2"}]},
    {"prompt": "User: bread?\nAssistant:", "responses": ["Bake it.", "Knead, rise, bake.", "No."], "objective": "helpful"},
    {"prompt": "User: hello\nAssistant:", "responses": ["Hi there!"], "kind": "rating"},
    {"prompt": "User: soup?\nAssistant:", "responses": ["Boil."], "kind": "edit"},
    {"prompt": "User: tie?\nAssistant:", "responses": ["Yes.", "Yes!"]},
    {"prompt": "User: gold?\nAssistant:", "responses": ["Good.", "Bad."], "gold": {"answer": {"choice": 0}, "explanation": "."}},
]  # fmt: skip


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_import_label_export_roundtrip(make_store, tmp_path):
    store = make_store()
    assert import_file(store, write_rows(tmp_path / "in.jsonl", ROWS)) == len(ROWS)
    ann = store.add_labeller("ann", onboarded=True)[0]
    answers = []
    while (task := store.next_task(ann.id)) is not None:
        ids = [r.id for r in task.responses]
        texts = [r.text for r in task.responses]
        if task.kind == "pairwise" and texts == ["Yes.", "Yes!"]:
            answer = LabelIn(task.id, f"r{task.id}", strength="tie", unsafe=True)
        elif task.kind == "pairwise":
            answer = LabelIn(task.id, f"r{task.id}", choice=ids[0], strength="much_better")
        elif task.kind == "ranking":
            answer = LabelIn(task.id, f"r{task.id}", ranking=[ids[1], ids[0], ids[2]])
        elif task.kind == "rating":
            answer = LabelIn(task.id, f"r{task.id}", rating=6)
        else:
            answer = LabelIn(task.id, f"r{task.id}", edit_text="Simmer vegetables in stock.")
        store.submit_label(ann.id, answer)
        answers.append(task.kind)
    assert sorted(answers) == [
        "edit",
        "pairwise",
        "pairwise",
        "ranking",
        "rating",
    ]  # the gold task is not queued

    assert export_file(store, "pairs", tmp_path / "pairs.jsonl") == 3
    data = load_preferences(tmp_path / "pairs.jsonl")
    by_prompt = {p.prompt: p for p in data.pairs}
    tea = by_prompt["User: tea?\nAssistant:"]
    assert (tea.chosen, tea.rejected, tea.margin, tea.labeller_id) == ("A drink.", "Go away.", 3.0, "ann")
    assert by_prompt["User: tie?\nAssistant:"].tie
    soup = by_prompt["User: soup?\nAssistant:"]
    assert (soup.chosen, soup.rejected) == ("Simmer vegetables in stock.", "Boil.")
    assert "User: gold?\nAssistant:" not in by_prompt
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [r.get("unsafe", False) for r in rows] == [False, False, True]

    assert export_file(store, "rankings", tmp_path / "rank.jsonl") == 1
    (ranking,) = load_preferences(tmp_path / "rank.jsonl").rankings
    assert ranking.responses == ("Bake it.", "Knead, rise, bake.", "No.")
    assert ranking.ranking == ((1,), (0,), (2,)) and ranking.objective == "helpful"
    assert ranking.labeller_id == "ann"

    assert export_file(store, "ratings", tmp_path / "ratings.jsonl") == 1
    (row,) = [json.loads(line) for line in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert (row["response"], row["rating"], row["labeller_id"]) == ("Hi there!", 6, "ann")
    load_preferences(tmp_path / "ratings.jsonl")  # valid (a lone rating is counted as unpaired)


def test_import_errors_name_the_line(make_store, tmp_path):
    store = make_store()
    with pytest.raises(UserError, match=r"bad.jsonl line 2: one response"):
        import_file(store, write_rows(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "p", "responses": ["a"]}]))
    with pytest.raises(UserError, match=r"bad2.jsonl line 2: a pairwise task needs 2"):
        import_file(
            store,
            write_rows(
                tmp_path / "bad2.jsonl",
                [ROWS[0], {**ROWS[0], "kind": "pairwise", "responses": ["a", "b", "c"]}],
            ),
        )
    assert store.count_labels() == 0
    (tmp_path / "empty.jsonl").write_text("\n")  # said "imported 0 tasks" and exited 0
    with pytest.raises(UserError, match=r"empty.jsonl has no rows; expected one task per line"):
        import_file(store, tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="unknown export kind"):
        export_file(store, "votes", tmp_path / "x.jsonl")


def test_peer_agreement_worked_example():
    from rlhf.feedback.dashboard import peer_agreement

    # task 1: a and b say A, c says B -> a 1/2, b 1/2, c 0/2; task 2: a and c agree -> a 1, c 1;
    # task 3 has one answer and counts for nobody. a: (0.5 + 1) / 2 = 0.75, b 0.5, c (0 + 1) / 2 = 0.5.
    answers = [(1, "a", "A"), (1, "b", "A"), (1, "c", "B"), (2, "a", "tie"), (2, "c", "tie"), (3, "b", "A")]
    assert peer_agreement(answers) == {"a": 0.75, "b": 0.5, "c": 0.5}


def test_labels_per_hour_waits_for_enough_labels_and_minutes():
    from datetime import datetime, timedelta

    from rlhf.feedback.dashboard import labels_per_hour

    t0 = datetime(2025, 1, 1, 12, 0, 0)
    every = lambda n, step: [t0 + i * step for i in range(n)]  # noqa: E731
    assert labels_per_hour(every(6, timedelta(minutes=6))) == 12.0  # 6 labels over 30 min: 6 / 0.5 h
    assert labels_per_hour(every(4, timedelta(minutes=20))) is None  # 4 labels: too few to tell
    assert labels_per_hour(every(5, timedelta(seconds=3))) is None  # 5 labels in 12 s: not 1,500 an hour
    assert labels_per_hour(every(5, timedelta(minutes=1.25))) == 60.0  # 5 labels over exactly 5 min
    assert labels_per_hour([]) is None


def test_dashboard_counts_and_disagreements(make_store):
    from rlhf.feedback.dashboard import dashboard
    from rlhf.feedback.store import Candidate

    store = make_store()
    store.push_candidates(
        [Candidate("User: q\nAssistant:", ["x", "y"], labels_wanted=2), Candidate("p", ["u", "v"])]
    )
    a, b = (store.add_labeller(n, onboarded=True)[0] for n in ("a", "b"))
    task = store.next_task(a.id)
    store.submit_label(a.id, LabelIn(task.id, "1", choice=task.responses[0].id, strength="better"))
    task_b = store.next_task(b.id)
    assert task_b.id == task.id
    store.submit_label(b.id, LabelIn(task.id, "2", choice=task.responses[1].id, strength="slightly_better"))
    store.skip(b.id, store.next_task(b.id).id, "not my field")
    figures = dashboard(store)
    assert (figures["tasks_total"], figures["tasks_done"], figures["labels_total"]) == (2, 1, 2)
    assert figures["labels_per_hour"] is None  # 2 labels seconds apart: no rate yet
    rows = {row["name"]: row for row in figures["labellers"]}
    assert rows["a"]["agreement"] == 0.0 and rows["b"]["skips"] == 1
    (example,) = figures["disagreements"]
    assert sorted(x["answer"] for x in example["answers"]) == ["A better", "B slightly better"]


def test_binary_tasks_import_and_export_as_unpaired_rows(make_store, tmp_path):
    """Binary rows import (kind given, gold {"label": ...}) and export through `rlhf label export --kind
    binary` as TRL KTO rows: prompt, completion, label, plus labeller_id, objective, reason, provenance."""
    from rlhf.cli import main

    rows = [
        {"prompt": "User: 2+2?\nAssistant:", "responses": ["4"], "kind": "binary", "objective": "helpful"},
        {"prompt": "User: hi\nAssistant:", "responses": ["Go away."], "kind": "binary"},
        {"prompt": "User: 3+3?\nAssistant:", "responses": ["7"], "kind": "binary",
         "gold": {"answer": {"label": False}, "explanation": "3+3 is 6."}},
    ]  # fmt: skip
    store = make_store()
    assert import_file(store, write_rows(tmp_path / "in.jsonl", rows)) == 3
    with pytest.raises(
        UserError, match="line 1: one response: give 'kind' \\('rating', 'edit' or 'binary'\\)"
    ):
        import_file(store, write_rows(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["x"]}]))
    ann = store.add_labeller("ann", onboarded=True)[0]
    for request_id in ("a", "b"):
        task = store.next_task(ann.id)
        good = task.responses[0].text == "4"
        store.submit_label(ann.id, LabelIn(task.id, request_id, label=good, reason=None if good else "rude"))
    assert store.next_task(ann.id) is None  # the gold task is not queued
    out = tmp_path / "binary.jsonl"
    if make_store.backend == "sqlite":  # the CLI would open PostgreSQL without the test's schema
        assert main(["label", "export", "--kind", "binary", "--out", str(out), "--db", make_store.url]) == 0
    else:
        assert export_file(store, "binary", out) == 2
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["completion"], r["label"], r["labeller_id"]) for r in got] == [
        ("User: 2+2?\nAssistant:", "4", True, "ann"),
        ("User: hi\nAssistant:", "Go away.", False, "ann"),
    ]
    assert got[0]["objective"] == "helpful" and "objective" not in got[1]
    assert got[1]["reason"] == "rude" and "reason" not in got[0]
    assert {"label_id", "task_id"} <= set(got[0])
    assert export_file(store, "pairs", tmp_path / "pairs.jsonl") == 0
