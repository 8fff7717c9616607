"""The loop's label phase with people (`--labellers web`) on a throwaway store, without models: a plan
that asks more different labellers for a task than have accounts fails at once, in one line; the wait
says which tasks wait for how many labels from whom; labels that can no longer come are not waited for."""

from __future__ import annotations

import json

import pytest

from rlhf.errors import UserError
from rlhf.feedback.records import LabelIn, StoreSettings, TaskProgress
from rlhf.feedback.store import FeedbackStore
from rlhf.io import write_jsonl
from rlhf.loop import LoopConfig, check_labellers, describe_waiting, label_phase, labels_wanted, push_tasks

SEED = 1001  # run.seed 1, round 1
# with this seed, overlap_share=0.2 of 10 picks overlaps the 7th and the 9th (task ids 7 and 9 below)


@pytest.fixture
def store(tmp_path):
    """A throwaway SQLite feedback store, the loop's project in it."""
    opened = FeedbackStore(f"sqlite:///{tmp_path / 'people.db'}", StoreSettings(project="loop"))
    yield opened
    opened.close()


def picks(n: int = 10) -> list[dict]:
    return [{"prompt": f"User: question {i}?\nAssistant:", "a": f" Answer {i}.", "b": f" No {i}.",
             "objective": "helpful", "priority": float(n - i)} for i in range(n)]  # fmt: skip


def web(**more) -> LoopConfig:
    # a short timeout: before the fix these plans waited it out (the tutorial's is a day)
    return LoopConfig(
        labellers="web", overlap_share=0.2, web_poll_seconds=0.01, web_timeout_seconds=2.0, **more
    )


def round_dir(tmp_path):
    path = tmp_path / "round_01.partial"
    path.mkdir()
    write_jsonl(path / "picked.jsonl", picks())
    return path


def tutorial_accounts(store) -> dict[str, int]:
    """The tutorial's two accounts (docs/tutorial.md step 3): the queue gives tasks to the admin too."""
    return {name: store.add_labeller(name, role, onboarded=True)[0].id
            for name, role in (("admin", "admin"), ("alice", "labeller"))}  # fmt: skip


def answer_all(store, labeller_id: int, skip: set[int] = frozenset()) -> None:
    while (task := store.next_task(labeller_id)) is not None:
        if task.id in skip:
            store.skip(labeller_id, task.id, "I cannot judge this one")
        else:
            store.submit_label(labeller_id, LabelIn(task.id, f"r{labeller_id}-{task.id}",
                                                    choice=task.responses[0].id, strength="better"))  # fmt: skip


def test_overlap_labellers_beyond_the_accounts_fails_before_any_task_is_pushed(store, tmp_path):
    tutorial_accounts(store)
    assert labels_wanted(10, web(overlap_labellers=3), SEED) == [1] * 6 + [3, 1, 3, 1]
    path = round_dir(tmp_path)
    with pytest.raises(UserError) as error:  # before: "waiting for 14 labels on 10 tasks", until the timeout
        label_phase(store, path, web(overlap_labellers=3), None, SEED, log=lambda *_: None)
    message = str(error.value)
    assert message.startswith(
        "loop.overlap_labellers=3 asks 3 different labellers for 2 of the round's 10 tasks"
    )
    assert (
        "has 2 active labeller accounts (admin, alice): lower it (--set loop.overlap_labellers=2) or add "
        in message
    )
    assert "`rlhf label add-labeller NAME --db sqlite:///" in message
    assert "\n" not in message and not (path / "tasks.json").exists()
    assert store.task_progress(range(1, 20)) == []  # nothing was pushed: a resumed round starts clean
    # with no account at all, every task is out of reach
    with pytest.raises(
        UserError, match="^sqlite:///x.db has no labeller accounts for the round's 10 tasks: add"
    ):
        check_labellers([1] * 10, [], "sqlite:///x.db", pushed=False)


def test_the_wait_says_which_tasks_wait_for_how_many_labels_from_whom(store, tmp_path):
    ids = tutorial_accounts(store)
    logged: list[str] = []

    def log(line: str) -> None:  # the people answer once the loop says what it waits for
        logged.append(line)
        if line.startswith("waiting"):
            answer_all(store, ids["admin"])
            answer_all(store, ids["alice"])

    rows = label_phase(store, round_dir(tmp_path), web(overlap_labellers=2), None, SEED, log)
    # 10 tasks, 2 of them (7 and 9) wanting 2 labels: 8 + 2 * 2 = 12 labels
    assert logged[0].startswith(
        "waiting for 12 labels on 10 of 10 tasks (tasks 7, 9: 2 more labels each from each of admin, alice; "
        "tasks 1, 2, 3, 4, 5, 6, 8, 10: 1 more label each from any one of admin, alice): people label them at "
        "`rlhf label serve --db "
    )
    assert len(rows) == 12 and {r["labeller_id"] for r in rows if r["task_id"] == 7} == {"admin", "alice"}
    assert json.loads((tmp_path / "round_01.partial" / "tasks.json").read_text()) == list(range(1, 11))


def test_a_task_the_remaining_labellers_skipped_is_not_waited_for(store, tmp_path):
    """Two accounts, task 7 wants both; alice skips it: its second label can never come. Before, the loop
    waited for it until the timeout; now it says so and goes on when every label that can come is in."""
    ids = tutorial_accounts(store)
    logged: list[str] = []

    def log(line: str) -> None:
        logged.append(line)
        if line.startswith("waiting"):
            answer_all(store, ids["admin"])
            answer_all(store, ids["alice"], skip={7})

    rows = label_phase(store, round_dir(tmp_path), web(overlap_labellers=2), None, SEED, log)
    assert logged[1] == ("task 7: 1 of 2 labels in and 0 labellers left who may answer it (the others "
                         "skipped it or were deactivated); the round goes on with 1")  # fmt: skip
    assert len(logged) == 2 and len(rows) == 11  # 12 planned, less alice's on task 7


def test_labellers_deactivated_or_flagged_mid_round(store, tmp_path):
    """alice holds a task when an admin deactivates her (`rlhf label deactivate alice`): the task goes back
    to the queue, her second labels on tasks 7 and 9 can never come and are not waited for; a flagged
    labeller (marked for review) still labels, so bob's labels are waited for and counted."""
    from rlhf.feedback.labellers import flag_in_store

    ids = {**tutorial_accounts(store), "bob": store.add_labeller("bob", "labeller", onboarded=True)[0].id}
    logged: list[str] = []

    def log(line: str) -> None:
        logged.append(line)
        if line.startswith("waiting"):
            held = store.next_task(ids["alice"])  # she opened a task and left it
            store.set_active(ids["alice"], False)
            assert store.next_task(ids["admin"]).id == held.id  # back in the queue at once
            flag_in_store(store, ["bob"])
            answer_all(store, ids["admin"], skip={7})
            answer_all(store, ids["bob"])

    rows = label_phase(store, round_dir(tmp_path), web(overlap_labellers=2), None, SEED, log)
    assert logged[0].startswith("waiting for 12 labels on 10 of 10 tasks (tasks 7, 9: 2 more labels each from "
                                "2 different labellers of admin, alice, bob;")  # fmt: skip
    # task 7: admin skipped it, alice is gone, bob answered: 1 of 2, nobody left
    assert logged[1:] == ["task 7: 1 of 2 labels in and 0 labellers left who may answer it (the others skipped "
                          "it or were deactivated); the round goes on with 1"]  # fmt: skip
    by_task = {}
    for row in rows:
        by_task.setdefault(row["task_id"], set()).add(row["labeller_id"])
    assert by_task[7] == {"bob"} and by_task[9] == {"admin", "bob"} and len(rows) == 11
    assert "alice" not in {r["labeller_id"] for r in rows}


def test_tasks_already_pushed_wanting_more_labellers_than_exist(store, tmp_path):
    """A resumed round (tasks.json written) whose tasks want 3 labellers, with 2 accounts: only more
    labellers can complete them, and the error says so rather than waiting."""
    tutorial_accounts(store)
    path = round_dir(tmp_path)
    (path / "tasks.json").write_text(json.dumps(push_tasks(store, picks(), [3] + [1] * 9)))
    with pytest.raises(UserError, match=r"^1 of the round's 10 tasks want 3 labels from different labellers but "
                       r".* has 2 active labeller accounts \(admin, alice\): add labellers with"):  # fmt: skip
        label_phase(store, path, web(overlap_labellers=2), None, SEED, log=lambda *_: None)


def test_describe_waiting_by_hand():
    progress = [
        TaskProgress(1, 1, (), ("ann", "bob", "cy")),  # 1 more, anyone
        TaskProgress(2, 1, (), ("ann", "bob", "cy")),
        TaskProgress(3, 3, ("ann",), ("bob", "cy")),  # 2 more, from both who have not answered
        TaskProgress(4, 3, (), ("ann", "bob", "cy", "dee")),  # 3 more from 4 candidates
        TaskProgress(5, 1, ("cy",), ()),  # done: not listed
        TaskProgress(6, 2, ("ann",), ()),  # 1 missing, nobody left (skipped): not waited for
    ]
    assert describe_waiting(progress) == (
        "task 4: 3 more labels from 3 different labellers of ann, bob, cy, dee; "
        "task 3: 2 more labels from each of bob, cy; "
        "tasks 1, 2: 1 more label each from any one of ann, bob, cy"
    )
    assert [p.missing for p in progress] == [1, 1, 2, 3, 0, 1]
