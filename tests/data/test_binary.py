"""Binary (thumbs up/down) rows, TRL's KTO format: reading, validation, duplicates, split, mixing."""

import json

import pytest

from rlhf.data import load_preferences, split_by_prompt
from rlhf.errors import UserError
from tests.data.test_formats import save_dataset, write_jsonl, write_parquet

P = "User: what is tea?\nAssistant:"
GOOD = {"prompt": P, "completion": "Tea is a drink.", "label": True}
ROWS = [
    GOOD,
    {"prompt": P, "completion": "Go away.", "label": False, "labeller_id": 3, "weight": 0.5},
    {"prompt": "User: hi\nAssistant:", "completion": "Hello.", "label": True, "objective": "helpful"},
]


def row(**changes):
    out = dict(GOOD, **changes)
    return {k: v for k, v in out.items() if v != "<drop>"}


def fields(b):
    return (b.prompt, b.completion, b.label, b.weight, b.labeller_id, b.objective)


EXPECTED = [
    (P, "Tea is a drink.", True, 1.0, None, None),
    (P, "Go away.", False, 0.5, "3", None),
    ("User: hi\nAssistant:", "Hello.", True, 1.0, None, "helpful"),
]


@pytest.mark.parametrize("writer", ["jsonl", "parquet", "dataset"])
def test_binary_rows_from_every_file_type(tmp_path, writer):
    path = {
        "jsonl": lambda: write_jsonl(tmp_path / "b.jsonl", ROWS),
        "parquet": lambda: write_parquet(tmp_path / "b.parquet", ROWS),
        "dataset": lambda: save_dataset(tmp_path / "b_ds", ROWS),
    }[writer]()
    data = load_preferences(path)
    assert [fields(b) for b in data.binary] == EXPECTED
    assert data.pairs == [] and data.rankings == []
    # the class balance: two thumbs up, one down
    assert (data.stats["binary"], data.stats["desirable"], data.stats["undesirable"]) == (3, 2, 1)
    assert data.stats["prompts"] == 2 and len(data) == 3
    assert data.binary[0].source.endswith(":1" if writer == "jsonl" else ":row 0")


def test_integer_labels_as_a_pandas_bool_column_becomes(tmp_path):
    # a bool column that went through pandas/CSV arrives as int64 0/1: read as false/true
    rows = [dict(r, label=int(r["label"])) for r in ROWS]
    data = load_preferences(write_parquet(tmp_path / "b.parquet", rows))
    assert [b.label for b in data.binary] == [True, False, True]


def test_conversational_binary_rows_render_like_pairs(tmp_path):
    messages = [{"role": "user", "content": "what is tea?"}]
    answer = [{"role": "assistant", "content": "Tea is a drink."}]
    path = write_jsonl(tmp_path / "b.jsonl", [{"prompt": messages, "completion": answer, "label": False}])
    (b,) = load_preferences(path).binary
    # no chat template: the world's plain format, as for pairs
    assert (b.prompt, b.completion, b.label) == (P, "Tea is a drink.", False)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(label="<drop>"), "field 'label' is missing"),
        (row(label=None), "field 'label' is null"),
        (row(label="true"), "field 'label' must be true or false (or 1 or 0), got \"true\""),
        (row(label=2), "field 'label' must be true or false (or 1 or 0), got 2"),
        (row(label=2.5), "field 'label' must be true or false (or 1 or 0), got 2.5"),
        (row(label=[True]), "field 'label' must be true or false (or 1 or 0), got [true]"),
        (row(completion=""), "field 'completion' is empty"),
        (row(completion=3), "field 'completion' must be a string, got int"),
        (row(prompt="<drop>"), "field 'prompt' is missing"),
        (row(prompt=[{"role": "user", "content": "hi"}]), "field 'completion' must be a list of messages"),
        (row(weight=0), "field 'weight' must be > 0, got 0.0"),
        (row(labeller_id=1.5), "field 'labeller_id' must be a string or an integer, got float"),
        (row(objective=3), "field 'objective' must be a string, got int"),
        (row(label=False), "field 'label' false contradicts label true at b.jsonl:1"),
    ],
)
def test_bad_binary_row_names_file_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "b.jsonl", [GOOD, bad])
    with pytest.raises(UserError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path} line 2: ")
    assert message in str(err.value)


def test_duplicates_dropped_and_other_labellers_kept(tmp_path):
    # line 2 repeats line 1 (same model input: the leading space is the joining space); line 3 is a
    # second labeller's vote, which is data, and may disagree
    rows = [GOOD, row(completion=" Tea is a drink."), row(labeller_id="b", label=False)]
    data = load_preferences(write_jsonl(tmp_path / "b.jsonl", rows))
    assert data.stats["duplicates_removed"] == 1 and len(data.binary) == 2
    assert data.stats["rows_read"] == data.stats["rows_kept"] + 1 == 3


def test_float_labels_of_a_pandas_column_with_a_missing_value(tmp_path):
    # 0/1 with a null becomes float64 in pandas: 1.0 / 0.0 read as labels, the null named on its own row
    rows = [dict(r, label=float(r["label"])) for r in ROWS] + [dict(GOOD, completion="Hm.", label=None)]
    with pytest.raises(UserError, match=r"b.parquet row 3: field 'label' is null"):
        load_preferences(write_parquet(tmp_path / "b.parquet", rows))
    data = load_preferences(write_parquet(tmp_path / "c.parquet", rows[:3]))
    assert [b.label for b in data.binary] == [True, False, True]
    with pytest.raises(
        UserError, match=r"line 1: field 'label' must be true or false \(or 1 or 0\), got 0.5"
    ):
        load_preferences(write_jsonl(tmp_path / "h.jsonl", [row(label=0.5)]))


def test_a_row_with_two_formats_fields_is_refused(tmp_path):
    # a binary label beside a comparison would lose one of them
    both = row(chosen="Tea is a drink.", rejected="Go away.")
    with pytest.raises(UserError) as err:
        load_preferences(write_jsonl(tmp_path / "both.jsonl", [both, GOOD]))
    assert str(err.value).endswith(
        "both.jsonl line 1: the row has the fields of 2 formats (pairs: chosen/rejected; binary: "
        "completion/label); give one label per row"
    )


def test_skip_mode_reports_bad_binary_rows(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [GOOD, row(label="yes"), row(completion="Hot water.")])
    with pytest.warns(
        UserWarning,
        match=r"b.jsonl: skipped 1 bad row\(s\) of 3 \(--on-error skip\); first: \S*b.jsonl line 2",
    ):
        data = load_preferences(path, on_error="skip")
    assert data.stats["rows_bad"] == 1 and len(data.binary) == 2
    (report,) = [json.loads(line) for line in (tmp_path / "b.jsonl.bad_rows.jsonl").read_text().splitlines()]
    assert report["source"] == "b.jsonl:2" and "field 'label'" in report["error"]


def test_binary_rows_mix_with_one_other_kind(tmp_path):
    # a reward model may train on comparisons and thumbs up/down from one file
    pair = {"prompt": P, "chosen": "Tea is a drink.", "rejected": "Go away."}
    rating = {"prompt": P, "response": "Hot.", "rating": 3}
    data = load_preferences(write_jsonl(tmp_path / "mix.jsonl", [GOOD, pair, row(completion="Go.", label=0)]))
    assert (len(data.pairs), len(data.binary), data.stats["undesirable"]) == (1, 2, 1)
    # ...but still not two comparison formats: the first decides, a rating among pairs is a bad pair row
    with pytest.raises(UserError, match=r"line 3: field 'chosen' is missing"):
        load_preferences(write_jsonl(tmp_path / "bad.jsonl", [pair, GOOD, rating]))
    # forcing another kind reads a binary row as that kind's (bad) row
    with pytest.raises(UserError, match=r"line 1: field 'chosen' is missing"):
        load_preferences(write_jsonl(tmp_path / "forced.jsonl", [GOOD]), kind="pairs")


def test_split_by_prompt_keeps_binary_prompts_on_one_side():
    from rlhf.data import BinaryExample, PreferenceData

    binary = [BinaryExample(f"p{i % 40}", f"c{i}", i % 3 == 0) for i in range(200)]
    train, evals = split_by_prompt(PreferenceData([], [], {}, binary), 0.25, seed=1)
    assert len(train.binary) + len(evals.binary) == 200
    assert not {b.prompt for b in train.binary} & {b.prompt for b in evals.binary}
    assert evals.stats["binary"] == len(evals.binary) > 0
    assert evals.stats["desirable"] == sum(b.label for b in evals.binary)
