"""Bytes of the files users bring: a UTF-8 byte-order mark is read through, bytes that are not UTF-8 are
one `UserError` naming the file, line, column and byte, through every public reader and the CLI."""

from __future__ import annotations

import json

import pytest

from rlhf.cli import main
from rlhf.config import load_config
from rlhf.config_root import RootConfig
from rlhf.data import load_preferences, load_prompts, read_response_rows
from rlhf.errors import ConfigError, UserError
from rlhf.feedback.exchange import export_file, import_file
from rlhf.feedback.store import FeedbackStore, LabelIn

BOM = b"\xef\xbb\xbf"


def jsonl_bytes(rows: list[dict]) -> bytes:
    # CRLF line ends, as a Windows editor that writes a BOM also writes them
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\r\n" for r in rows)


PAIRS = [
    {"prompt": "User: café?\nAssistant:", "chosen": "A drink ☕.", "rejected": "No."},
    {"prompt": "User: bread?\nAssistant:", "chosen": "Bake it.", "rejected": "Go."},
]
# Line 3 holds one Latin-1 byte: "é" saved as 0xe9 (valid UTF-8 spells it 0xc3 0xa9). Its column counts
# characters: `{"prompt": "caf` is 15 of them, so the bad byte is column 16.
LATIN1_LINE = b'{"prompt": "caf\xe9?", "chosen": "a", "rejected": "b"}\r\n'


def not_utf8_message(path, line: int = 3, byte: str = "0xe9", column: int = 16) -> str:
    return f"{path} line {line}: not valid UTF-8 (byte {byte} at column {column}); save the file as UTF-8"


@pytest.fixture
def bom_pairs(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + jsonl_bytes(PAIRS))
    return path


@pytest.fixture
def latin1_pairs(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(jsonl_bytes(PAIRS) + LATIN1_LINE)
    return path


def test_bom_is_read_through_by_every_reader(bom_pairs, tmp_path):
    data = load_preferences(bom_pairs)
    assert [(p.prompt, p.chosen, p.rejected) for p in data.pairs] == [
        (r["prompt"], r["chosen"], r["rejected"]) for r in PAIRS
    ]
    assert load_prompts(bom_pairs) == ["User: café?\nAssistant:", "User: bread?\nAssistant:"]
    responses = tmp_path / "responses.jsonl"
    responses.write_bytes(BOM + jsonl_bytes([{"prompt": "p", "response": "naïve"}]))
    rows, prompts, texts = read_response_rows(responses)
    assert (rows, prompts, texts) == ([{"prompt": "p", "response": "naïve"}], ["p"], ["naïve"])


def test_bytes_that_are_not_utf8_name_file_line_column_and_byte(latin1_pairs, tmp_path):
    for read in (load_preferences, load_prompts):
        with pytest.raises(UserError) as caught:
            read(latin1_pairs)
        assert str(caught.value) == not_utf8_message(latin1_pairs)
    responses = tmp_path / "responses.jsonl"
    responses.write_bytes(
        jsonl_bytes([{"prompt": "p", "response": "a"}] * 2) + b'{"prompt": "caf\xe9?", "response": "a"}\n'
    )
    with pytest.raises(UserError) as caught:
        read_response_rows(responses)
    assert str(caught.value) == not_utf8_message(responses)
    # after a BOM, columns still count from the first character the user sees
    first = tmp_path / "first.jsonl"
    first.write_bytes(BOM + b'{"prompt": "\xff"}\n')
    with pytest.raises(UserError) as caught:
        load_prompts(first)
    assert str(caught.value) == not_utf8_message(first, line=1, byte="0xff", column=13)


def test_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes('{"prompt": "hi"}\n'.encode("utf-16"))  # with its BOM, ff fe on little-endian
    with pytest.raises(UserError) as caught:
        load_prompts(path)
    assert str(caught.value) == (
        f"{path} line 1: not valid UTF-8 (byte 0xff at column 1; the file looks like UTF-16); "
        "save the file as UTF-8"
    )


def test_label_import_reads_a_bom_and_export_round_trips_the_text(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(
        BOM + jsonl_bytes([{"prompt": "User: café?\nAssistant:", "responses": ["Thé ☕.", "Non."]}])
    )
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    assert import_file(store, tasks) == 1
    labeller = store.add_labeller("ann", onboarded=True)[0]
    view = store.next_task(labeller.id)
    store.submit_label(labeller.id, LabelIn(view.id, "r", choice=view.responses[0].id, strength="better"))
    assert export_file(store, "pairs", tmp_path / "pairs.jsonl") == 1
    store.close()
    (pair,) = load_preferences(tmp_path / "pairs.jsonl").pairs
    assert (pair.prompt, pair.chosen, pair.rejected) == ("User: café?\nAssistant:", "Thé ☕.", "Non.")


def test_label_import_of_bytes_that_are_not_utf8(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(
        b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "\x93quoted\x94", "responses": ["a", "b"]}\n'
    )
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    with pytest.raises(UserError) as caught:
        import_file(store, tasks)
    # Windows-1252 curly quote 0x93 right after `{"prompt": "` (12 characters)
    assert str(caught.value) == not_utf8_message(tasks, line=2, byte="0x93", column=13)
    assert store.count_labels() == 0
    store.close()


def test_yaml_config_with_a_bom_or_bad_bytes(tmp_path):
    good = tmp_path / "bom.yaml"
    good.write_bytes(BOM + b"run:\r\n  seed: 7\r\n")
    assert load_config(RootConfig, good).run.seed == 7
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"run:\n  seed: 7  # caf\xe9\n")  # `  seed: 7  # caf` is 16 characters
    with pytest.raises(ConfigError) as caught:
        load_config(RootConfig, bad)
    assert str(caught.value) == "config file " + not_utf8_message(bad, line=2, column=17)


def test_cli_prints_one_line_and_no_traceback(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(jsonl_bytes([{"prompt": "p", "responses": ["a", "b"]}]) + b'{"prompt": "caf\xe9"}\n')
    db = f"sqlite:///{tmp_path / 'f.db'}"
    for args, message in [
        (["label", "import", str(tasks), "--db", db], not_utf8_message(tasks, line=2)),
        (["label", "serve", "--guidelines", str(tasks), "--db", db], not_utf8_message(tasks, line=2)),
        (["config", "show", "--config", str(tasks)], "config file " + not_utf8_message(tasks, line=2)),
    ]:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert err.splitlines() == [f"rlhf: error: {message}"], err
    tasks.write_bytes(BOM + jsonl_bytes([{"prompt": "p", "responses": ["a", "b"]}]))
    assert main(["label", "import", str(tasks), "--db", db]) == 0
    assert capsys.readouterr().out.strip() == f"imported 1 tasks from {tasks}"
