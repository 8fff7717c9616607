"""`rlhf report` on runs whose statistics are undefined: the page says so instead of crashing."""

from __future__ import annotations

from pathlib import Path

from rlhf.io import write_json, write_jsonl

PROMPT = "User: how do I boil an egg?\nAssistant:"


def two_round_run(run: Path, labels: list[dict]) -> Path:
    """The files `rlhf report` reads from a loop run: round 0 (the initial policy) and one round with labels."""
    for k in (0, 1):
        path = run / f"round_{k:02d}"
        path.mkdir(parents=True)
        write_json(path / "round.json", {"round": k, "policy": "p", "labels_total": len(labels) * k,
                                         "eval": {"kl": 0.1 * k}, "seconds": {}})  # fmt: skip
        write_jsonl(path / "showcase.jsonl", [{"prompt": PROMPT, "response": " Boil it."}])
    write_jsonl(run / "round_01" / "labels.jsonl", labels)
    return run


def test_report_when_the_web_labellers_agree(tmp_path, capsys):
    """The end of `rlhf loop --labellers web` with two people who agree on the one comparison they share:
    Krippendorff's alpha is 1 - 0/0. The report raised ZeroDivisionError (after training had finished);
    now it is written, and shows alpha as undefined with the reason."""
    from rlhf.cli import main

    both = [{"prompt": PROMPT, "chosen": " Boil it for eight minutes.", "rejected": " No.", "labeller_id": name,
             "objective": "helpful"} for name in ("alice", "bob")]  # fmt: skip
    run = two_round_run(tmp_path / "run", both)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Krippendorff's alpha (nominal) undefined (every item answered by 2 or more labellers got " in page
    assert ">nan<" not in page and " nan" not in page  # no raw NaN anywhere on the page
