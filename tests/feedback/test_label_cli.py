"""`rlhf label add-labeller | import | export` end to end on a SQLite file, and their one-line errors."""

from __future__ import annotations

import json

from rlhf.cli import main
from rlhf.data import load_preferences
from rlhf.feedback.store import FeedbackStore, LabelIn


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_label_commands(capsys, tmp_path):
    db = f"sqlite:///{tmp_path / 'sub' / 'f.db'}"  # the directory and schema are created
    code, out, _ = run(capsys, "label", "add-labeller", "ann", "--db", db)
    assert code == 0 and "created labeller 'ann'" in out
    token = out.strip().splitlines()[-1]
    code, out, _ = run(capsys, "label", "add-labeller", "boss", "--admin", "--db", db)
    assert code == 0 and "created admin" in out
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"prompt": "User: hi\nAssistant:", "responses": ["Hello!", "Go away."]}) + "\n"
    )
    code, out, _ = run(capsys, "label", "import", str(tasks), "--db", db)
    assert (code, out.strip()) == (0, f"imported 1 tasks from {tasks}")

    store = FeedbackStore(db)
    ann = store.labeller_by_token(token)
    ann_view = store.next_task(ann.id)  # ann has no gold questions to answer: straight to the task
    store.submit_label(ann.id, LabelIn(ann_view.id, "r", choice=ann_view.responses[0].id, strength="better"))
    store.close()

    out_file = tmp_path / "pairs.jsonl"
    code, out, _ = run(capsys, "label", "export", "--db", db, "--out", str(out_file), "--kind", "pairs")
    assert code == 0 and "wrote 1 pairs rows" in out
    (pair,) = load_preferences(out_file).pairs
    assert (pair.chosen, pair.rejected, pair.labeller_id) == ("Hello!", "Go away.", "ann")


def test_label_errors_are_one_line(capsys, tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    for args, fragment in [
        (["label", "add-labeller", "ann", "--db", "mysql://x"], "unsupported database"),
        (["label", "add-labeller", "ann", "--db", "not a url"], "not a database URL"),
        (["label", "add-labeller", "bad name", "--db", db], "labeller name"),
        (["label", "import", str(tmp_path / "missing.jsonl"), "--db", db], "does not exist"),
        (
            ["label", "export", "--db", db, "--out", str(tmp_path / "x"), "--kind", "votes"],
            "unknown export kind",
        ),
    ]:
        code, _, err = run(capsys, *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0], err
