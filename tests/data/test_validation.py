"""Every validation error names the file, the line or row, and the field; skip mode reports bad rows."""

import json

import pytest

from rlhf.data import load_preferences, load_prompts
from rlhf.errors import UserError
from tests.conftest import make_tokenizer
from tests.data.test_formats import write_jsonl, write_parquet

USER = [{"role": "user", "content": "hi"}]
ANSWER = [{"role": "assistant", "content": "Hello."}]
GOOD_PAIR = {"prompt": "User: hi\nAssistant:", "chosen": "Hello.", "rejected": "Go away."}
GOOD_RANKING = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 2]}
GOOD_RATING = {"prompt": "p", "response": "a", "rating": 3}


def pair(**changes):
    row = dict(GOOD_PAIR, **changes)
    return {k: v for k, v in row.items() if v != "<drop>"}


BAD_PAIRS = [
    (pair(rejected="<drop>"), "field 'rejected' is missing"),
    (pair(chosen=None), "field 'chosen' is null"),
    (pair(chosen=5), "field 'chosen' must be a string, got int"),
    (pair(chosen="  \n"), "field 'chosen' is empty"),
    (pair(prompt=""), "field 'prompt' is empty"),
    (pair(prompt=7), "field 'prompt' must be text or a list of {role, content} messages, got int"),
    (pair(rejected="Hello."), "fields 'chosen' and 'rejected' are the same text"),
    (pair(rejected=" Hello."), "fields 'chosen' and 'rejected' are the same text"),  # same model input
    (pair(margin="big"), "field 'margin' must be a number, got str"),
    (pair(margin=float("nan")), "field 'margin' must be a finite number, got nan"),
    (pair(weight=0), "field 'weight' must be > 0, got 0.0"),
    (pair(weight=float("inf")), "field 'weight' must be a finite number, got inf"),
    (pair(weight=True), "field 'weight' must be a number, got bool"),
    (pair(labeller_id=[1]), "field 'labeller_id' must be a string or an integer, got list"),
    (pair(objective=3), "field 'objective' must be a string, got int"),
    (pair(tie="yes"), "field 'tie' must be true or false, got str"),
    (pair(prompt="<drop>"), "field 'prompt' is missing"),  # plain text cannot have an implicit prompt
    # malformed messages
    (
        pair(prompt=["hi"], chosen=ANSWER, rejected=ANSWER),
        "field 'prompt' message 0 must be an object, got str",
    ),
    (pair(prompt=[], chosen=ANSWER), "field 'prompt' must be a non-empty list of {role, content} messages"),
    (
        pair(prompt=USER, chosen=[{"role": "assistant"}]),
        "field 'chosen' message 0: 'content' must be a string, got missing",
    ),
    (
        pair(prompt=USER, chosen=[{"role": 1, "content": "x"}]),
        "field 'chosen' message 0: 'role' must be a string, got int",
    ),
    (
        pair(prompt=USER, chosen=ANSWER, rejected="No."),
        "field 'rejected' must be a list of messages like 'prompt', got str",
    ),
    (
        pair(prompt=USER, chosen=USER, rejected=ANSWER),
        "field 'chosen' must start with an assistant message, got role 'user'",
    ),
    (
        pair(prompt=USER, chosen=[{"role": "assistant", "content": " "}], rejected=ANSWER),
        "field 'chosen' is empty",
    ),
    (
        pair(prompt="<drop>", chosen=ANSWER, rejected=[{"role": "assistant", "content": "No."}]),
        "field 'prompt' is missing and 'chosen' and 'rejected' share no first message",
    ),
    (
        pair(prompt="<drop>", chosen=USER + ANSWER, rejected=USER),
        "one of 'chosen'/'rejected' is a prefix of the other",
    ),
]


@pytest.mark.parametrize(("row", "message"), BAD_PAIRS)
def test_bad_pair_row_names_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD_PAIR, row])
    with pytest.raises(UserError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path} line 2: ")
    assert message in str(err.value)


def ranking(**changes):
    return dict(GOOD_RANKING, **changes)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            ranking(ranking=[0, 0, 1]),
            "field 'ranking' [0, 0, 1] is not a permutation of range(3): each of 0..2",
        ),
        (ranking(ranking=[0, 1]), "field 'ranking' [0, 1] is not a permutation of range(3)"),
        (
            ranking(ranking=[[0, 1], [2, 3]]),
            "field 'ranking' [[0, 1], [2, 3]] is not a permutation of range(3)",
        ),
        (ranking(ranking=[0, "1", 2]), "field 'ranking' [0, '1', 2] must hold response indices"),
        (ranking(ranking=[[0, 1], [], [2]]), "must hold response indices or non-empty lists of them"),
        (ranking(ranking=[]), "field 'ranking' must be a non-empty list of response indices, got []"),
        (ranking(responses=["a"], ranking=[0]), "field 'responses' must hold at least 2 responses, got 1"),
        (ranking(responses="abc"), "field 'responses' must be a list of responses, got str"),
        (ranking(responses=["a", "", "c"]), "field 'responses[1]' is empty"),
        (ranking(responses=["a", 2, "c"]), "field 'responses[1]' must be a string, got int"),
        (
            ranking(responses=["a", "b", "a"]),
            "field 'responses': response 2 repeats another response ranked differently",
        ),
        (ranking(weight=-1), "field 'weight' must be > 0, got -1.0"),
        (ranking(ranking="<drop>"), "field 'ranking' is missing"),
    ],
)
def test_bad_ranking_row(tmp_path, row, message):
    row = {k: v for k, v in row.items() if v != "<drop>"}
    path = write_jsonl(tmp_path / "rank.jsonl", [GOOD_RANKING, row])
    with pytest.raises(UserError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path} line 2: ") and message in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (dict(GOOD_RATING, rating="5"), "field 'rating' must be a number, got str"),
        (dict(GOOD_RATING, rating=float("inf")), "field 'rating' must be a finite number, got inf"),
        (dict(GOOD_RATING, rating=None), "field 'rating' is null"),
        (dict(GOOD_RATING, response=""), "field 'response' is empty"),
        (dict(GOOD_RATING, rating=4), "field 'rating' 4.0 contradicts rating 3.0 at ratings.jsonl:1"),
    ],
)
def test_bad_rating_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "ratings.jsonl", [GOOD_RATING, row])
    with pytest.raises(UserError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path} line 2: ") and message in str(err.value)


def test_parquet_errors_name_the_zero_based_row(tmp_path):
    path = write_parquet(tmp_path / "pairs.parquet", [GOOD_PAIR, pair(chosen=" ")])
    with pytest.raises(UserError, match=r"pairs\.parquet row 1: field 'chosen' is empty"):
        load_preferences(path)


def test_unknown_format_and_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("\n" + json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(
        UserError, match=r"x\.jsonl line 2: cannot tell the format: .* found 'question', 'answer'"
    ):
        load_preferences(path)


def test_chat_template_that_does_not_extend_the_prompt(tmp_path):
    tokenizer = make_tokenizer()
    # The generation prompt "<a>" is not what the assistant turn starts with, so the prefix check fails.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    path = write_jsonl(tmp_path / "c.jsonl", [pair(prompt=USER, chosen=ANSWER, rejected=ANSWER)])
    with pytest.raises(UserError, match=r"c\.jsonl line 1: field 'chosen': the chat template's rendering"):
        load_preferences(path, tokenizer=tokenizer)


# ----------------------------------------------------------------------------- file errors


def test_file_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match=r"nope\.jsonl does not exist"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match=r"empty\.jsonl has no rows"):
        load_preferences(tmp_path / "empty.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match=r"bad\.parquet is not a readable Parquet file"):
        load_preferences(tmp_path / "bad.parquet")
    (tmp_path / "data.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(UserError, match=r"data\.csv: unknown file type '\.csv'"):
        load_preferences(tmp_path / "data.csv")
    (tmp_path / "broken.jsonl").write_text(json.dumps(GOOD_PAIR) + "\n{not json\n")
    with pytest.raises(UserError, match=r"broken\.jsonl line 2: not valid JSON"):
        load_preferences(tmp_path / "broken.jsonl", on_error="skip")  # a damaged file is not a bad row
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=r"folder is a folder but not a dataset"):
        load_preferences(tmp_path / "folder")
    with pytest.raises(UserError, match="on_error must be one of stop, skip"):
        load_preferences(tmp_path / "broken.jsonl", on_error="ignore")
    with pytest.raises(UserError, match="unknown preference kind 'pair'"):
        load_preferences(tmp_path / "broken.jsonl", kind="pair")


def test_missing_split_names_the_splits(tmp_path):
    from tests.data.test_formats import save_dataset

    path = save_dataset(tmp_path / "dd", None, splits={"train": [GOOD_PAIR]})
    with pytest.raises(UserError, match=r"dd has no split 'test'; it has: train"):
        load_preferences(path, split="test")


# ----------------------------------------------------------------------------- skip mode


def test_skip_mode_counts_and_reports_bad_rows(tmp_path):
    rows = [GOOD_PAIR, pair(chosen=""), GOOD_PAIR, pair(weight=0), pair(chosen="Tea.", labeller_id="B")]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    data = load_preferences(path, on_error="skip")
    # 5 rows = 2 kept + 2 bad + 1 duplicate (line 3 repeats line 1)
    assert (data.stats["rows_read"], data.stats["rows_kept"], data.stats["rows_bad"]) == (5, 2, 2)
    assert data.stats["duplicates_removed"] == 1
    assert [p.source for p in data.pairs] == ["pairs.jsonl:1", "pairs.jsonl:5"]
    report = [json.loads(line) for line in (tmp_path / "pairs.jsonl.bad_rows.jsonl").read_text().splitlines()]
    assert report == [
        {"source": "pairs.jsonl:2", "error": "field 'chosen' is empty", "row": rows[1]},
        {"source": "pairs.jsonl:4", "error": "field 'weight' must be > 0, got 0.0", "row": rows[3]},
    ]


def test_skip_mode_report_path_and_no_report_when_clean(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD_PAIR, pair(chosen=1)])
    load_preferences(path, on_error="skip", report_path=tmp_path / "out" / "bad.jsonl")
    assert len((tmp_path / "out" / "bad.jsonl").read_text().splitlines()) == 1
    clean = write_jsonl(tmp_path / "clean.jsonl", [GOOD_PAIR])
    load_preferences(clean, on_error="skip")
    assert not (tmp_path / "clean.jsonl.bad_rows.jsonl").exists()


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair(chosen=""), pair(chosen=2)])
    with pytest.raises(
        UserError, match=r"pairs\.jsonl: all 2 rows are bad; first: .*line 1: field 'chosen' is empty"
    ):
        load_preferences(path, on_error="skip")
    assert len((tmp_path / "pairs.jsonl.bad_rows.jsonl").read_text().splitlines()) == 2


def test_load_prompts_validation(tmp_path):
    path = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": "a"}, {"prompt": ""}, {"text": "b"}, {"prompt": [{"role": "user"}]}],
    )
    with pytest.raises(UserError, match=r"prompts\.jsonl line 2: field 'prompt' is empty"):
        load_prompts(path)
    assert load_prompts(path, on_error="skip") == ["a"]
    report = [
        json.loads(line)["error"]
        for line in (tmp_path / "prompts.jsonl.bad_rows.jsonl").read_text().splitlines()
    ]
    assert report == [
        "field 'prompt' is empty",
        "field 'prompt' is missing",
        "field 'prompt' message 0: 'content' must be a string, got missing",
    ]
