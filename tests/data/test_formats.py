"""Each row format (pairs, rankings, ratings) from each file type, conversational rendering, prompt files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.data import load_preferences, load_prompts
from tests.conftest import make_tokenizer

P = "User: what is tea?\nAssistant:"
PAIRS = [
    {"prompt": P, "chosen": "Tea is a drink.", "rejected": "Go away.", "margin": 2, "labeller_id": 7},
    {"prompt": P, "chosen": "Tea is a drink.", "rejected": "Bread.", "weight": 0.5, "objective": "helpful"},
    {"prompt": P, "chosen": "Fine.", "rejected": "Also fine.", "tie": True},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _filled(rows):
    # pyarrow and datasets take the columns from the first row: give every row every key (null if absent).
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(_filled(rows)), path)
    return path


def save_dataset(path, rows, splits=None):
    import datasets

    if splits:
        datasets.DatasetDict(
            {name: datasets.Dataset.from_list(_filled(r)) for name, r in splits.items()}
        ).save_to_disk(path)
    else:
        datasets.Dataset.from_list(_filled(rows)).save_to_disk(path)
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def fields(pair):
    return (
        pair.prompt,
        pair.chosen,
        pair.rejected,
        pair.margin,
        pair.weight,
        pair.labeller_id,
        pair.objective,
        pair.tie,
    )


EXPECTED = [
    (P, "Tea is a drink.", "Go away.", 2.0, 1.0, "7", None, False),  # labeller_id int -> "7"
    (P, "Tea is a drink.", "Bread.", 0.0, 0.5, None, "helpful", False),
    (P, "Fine.", "Also fine.", 0.0, 1.0, None, None, True),
]


def test_pairs_from_jsonl(tmp_path):
    data = load_preferences(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    assert [fields(p) for p in data.pairs] == EXPECTED
    assert [p.source for p in data.pairs] == ["pairs.jsonl:1", "pairs.jsonl:2", "pairs.jsonl:3"]
    assert data.rankings == [] and len(data) == 3 and data.prompts() == {P}
    assert data.stats["rows_read"] == 3 and data.stats["rows_kept"] == 3 and data.stats["ties"] == 1


def test_json_extension_is_read_as_json_lines(tmp_path):
    assert [
        fields(p) for p in load_preferences(write_jsonl(tmp_path / "pairs.json", PAIRS)).pairs
    ] == EXPECTED


def test_pairs_from_parquet(tmp_path):
    # Parquet fills the fields a row lacks with null: null optional fields mean "absent".
    data = load_preferences(write_parquet(tmp_path / "pairs.parquet", PAIRS))
    assert [fields(p) for p in data.pairs] == EXPECTED
    assert [p.source for p in data.pairs] == [
        "pairs.parquet:row 0",
        "pairs.parquet:row 1",
        "pairs.parquet:row 2",
    ]


def test_pairs_from_datasets_folder_and_split(tmp_path):
    data = load_preferences(save_dataset(tmp_path / "ds", PAIRS))
    assert [fields(p) for p in data.pairs] == EXPECTED
    assert data.pairs[2].source == "ds:row 2"
    path = save_dataset(tmp_path / "dd", None, splits={"train": PAIRS[:2], "test": PAIRS[2:]})
    assert [fields(p) for p in load_preferences(path).pairs] == EXPECTED[:2]  # "train" by default
    assert [fields(p) for p in load_preferences(path, split="test").pairs] == EXPECTED[2:]


def test_rankings_with_ties_flat_and_nested(tmp_path):
    rows = [
        {"prompt": P, "responses": ["a", "b", "c", "d"], "ranking": [2, [0, 1], 3], "labeller_id": "L1"},
        {
            "prompt": P,
            "responses": ["a", "b", "c"],
            "ranking": [[1], [2], [0]],
            "weight": 2.0,
            "objective": "harmless",
        },
    ]
    data = load_preferences(write_jsonl(tmp_path / "rank.jsonl", rows))
    assert data.pairs == []
    first, second = data.rankings
    assert (first.responses, first.ranking, first.labeller_id) == (
        ("a", "b", "c", "d"),
        ((2,), (0, 1), (3,)),
        "L1",
    )
    assert (second.ranking, second.weight, second.objective, second.source) == (
        ((1,), (2,), (0,)),
        2.0,
        "harmless",
        "rank.jsonl:2",
    )
    # Parquet holds only the uniform nested form [[2], [0, 1], [3]]
    rows[0]["ranking"] = [[2], [0, 1], [3]]
    rows[1]["ranking"] = [[1], [2], [0]]
    assert load_preferences(write_parquet(tmp_path / "rank.parquet", rows)).rankings[0].ranking == (
        (2,),
        (0, 1),
        (3,),
    )


def test_ratings_become_pairs_within_prompt_labeller_and_objective(tmp_path):
    rows = [
        {"prompt": "p1", "response": "x", "rating": 5, "labeller_id": "A"},
        {"prompt": "p1", "response": "y", "rating": 3, "labeller_id": "A"},
        {"prompt": "p1", "response": "z", "rating": 3, "labeller_id": "A"},
        {"prompt": "p1", "response": "w", "rating": 1, "labeller_id": "B"},  # B's only rating of p1
        {"prompt": "p2", "response": "u", "rating": 2, "labeller_id": "A"},
        {"prompt": "p2", "response": "v", "rating": 4, "labeller_id": "A"},
        {"prompt": "p2", "response": "t", "rating": 1, "labeller_id": "A", "objective": "harmless"},  # alone
    ]
    path = write_jsonl(tmp_path / "ratings.jsonl", rows)
    data = load_preferences(path)
    # (p1, A): x>y, x>z, y~z = 3 pairs; (p1, B): none; (p2, A, None): v>u = 1; (p2, A, harmless): none
    assert [(p.prompt, p.chosen, p.rejected, p.tie, p.margin) for p in data.pairs] == [
        ("p1", "x", "y", False, 0.0),
        ("p1", "x", "z", False, 0.0),
        ("p1", "y", "z", True, 0.0),
        ("p2", "v", "u", False, 0.0),
    ]
    assert data.pairs[0].source == "ratings.jsonl:1+2" and data.pairs[3].source == "ratings.jsonl:5+6"
    assert data.stats["pairs_from_ratings"] == 4 and data.stats["ratings_unpaired"] == 2
    assert data.stats["rows_kept"] == 7 and data.stats["ties"] == 1
    # rating_margin: margin = rating difference, 5-3 = 2, 5-3 = 2, 3-3 = 0, 4-2 = 2
    assert [p.margin for p in load_preferences(path, rating_margin=True).pairs] == [2.0, 2.0, 0.0, 2.0]


def test_kind_detected_from_first_row_with_a_formats_fields_or_forced(tmp_path):
    rows = [{"note": "header-like row"}, {"prompt": "p", "response": "r", "rating": 1}]
    data = load_preferences(write_jsonl(tmp_path / "r.jsonl", rows), on_error="skip")
    assert data.stats["rows_bad"] == 1 and data.stats["ratings_unpaired"] == 1
    with pytest.raises(Exception, match="field 'chosen' is missing"):
        load_preferences(tmp_path / "r.jsonl", kind="pairs")


# ----------------------------------------------------------------------------- conversational

CONV = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is tea?"}],
    "chosen": [{"role": "assistant", "content": "A drink."}],
    "rejected": [{"role": "assistant", "content": "Go away."}],
}


def test_conversational_pairs_with_the_chat_template(tmp_path, tokenizer):
    pair = load_preferences(write_jsonl(tmp_path / "c.jsonl", [CONV]), tokenizer=tokenizer).pairs[0]
    # The world template: system "{content}\n", user "User: ...\nAssistant:", assistant " {content}<eos>";
    # the EOS is stripped from the response.
    assert pair.prompt == "Be brief.\nUser: what is tea?\nAssistant:"
    assert (pair.chosen, pair.rejected) == (" A drink.", " Go away.")


def test_conversational_pairs_by_the_plain_fallback(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", [CONV])
    no_template = make_tokenizer()
    no_template.chat_template = None
    for tok in (None, no_template):
        pair = load_preferences(path, tokenizer=tok).pairs[0]
        assert pair.prompt == "Be brief.\nUser: what is tea?\nAssistant:"
        assert (pair.chosen, pair.rejected) == ("A drink.", "Go away.")


def test_multi_turn_prompt_and_response(tmp_path, tokenizer):
    row = {
        "prompt": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "tea?"},
        ],
        "chosen": [
            {"role": "assistant", "content": "A drink."},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "Welcome."},
        ],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    plain = load_preferences(path).pairs[0]
    assert plain.prompt == "User: hi\nAssistant: Hello.\nUser: tea?\nAssistant:"
    assert plain.chosen == "A drink.\nUser: thanks\nAssistant: Welcome."
    templ = load_preferences(path, tokenizer=tokenizer).pairs[0]
    # transformers renders templates with trim_blocks, so no newline follows the world template's EOS.
    assert templ.prompt == "User: hi\nAssistant: Hello.<|endoftext|>\nUser: tea?\nAssistant:"
    assert templ.chosen == " A drink.<|endoftext|>\nUser: thanks\nAssistant: Welcome."


def test_implicit_prompt_is_the_shared_prefix(tmp_path, tokenizer):
    row = {"chosen": CONV["prompt"] + CONV["chosen"], "rejected": CONV["prompt"] + CONV["rejected"]}
    path = write_jsonl(tmp_path / "implicit.jsonl", [row])
    for tok, space in ((None, ""), (tokenizer, " ")):
        pair = load_preferences(path, tokenizer=tok).pairs[0]
        assert pair.prompt == "Be brief.\nUser: what is tea?\nAssistant:"
        assert (pair.chosen, pair.rejected) == (space + "A drink.", space + "Go away.")


def test_conversational_from_parquet_rankings_and_ratings(tmp_path, tokenizer):
    user = [{"role": "user", "content": "tea?"}]
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    path = write_parquet(tmp_path / "c.parquet", [dict(CONV)])
    assert load_preferences(path, tokenizer=tokenizer).pairs[0].chosen == " A drink."
    rank = {"prompt": user, "responses": [answer("a"), answer("b")], "ranking": [1, 0]}
    example = load_preferences(write_jsonl(tmp_path / "r.jsonl", [rank]), tokenizer=tokenizer).rankings[0]
    assert (example.prompt, example.responses) == ("User: tea?\nAssistant:", (" a", " b"))
    ratings = [{"prompt": user, "response": answer(t), "rating": r} for t, r in (("a", 1), ("b", 2))]
    pair = load_preferences(write_jsonl(tmp_path / "s.jsonl", ratings)).pairs[0]
    assert (pair.prompt, pair.chosen, pair.rejected) == ("User: tea?\nAssistant:", "b", "a")


# ----------------------------------------------------------------------------- duplicates


def test_exact_duplicates_removed_but_another_labellers_vote_kept(tmp_path, tokenizer):
    row = {"prompt": P, "chosen": "Tea is a drink.", "rejected": "Go away.", "labeller_id": "A"}
    rows = [
        row,
        dict(row),  # exact duplicate: removed
        dict(row, margin=3.0),  # same pair and labeller, other margin: still a duplicate
        dict(row, labeller_id="B"),  # another labeller agreeing: a second vote
        dict(row, objective="harmless"),  # about another reward head: kept
    ]
    data = load_preferences(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [(p.labeller_id, p.objective, p.source) for p in data.pairs] == [
        ("A", None, "d.jsonl:1"),
        ("B", None, "d.jsonl:4"),
        ("A", "harmless", "d.jsonl:5"),
    ]
    assert data.stats["duplicates_removed"] == 2
    assert data.stats["rows_read"] == data.stats["rows_kept"] + data.stats["rows_bad"] + 2 == 5


def test_chat_rendered_and_plain_copies_of_one_pair_are_duplicates(tmp_path, tokenizer):
    # " Tea." (template) and "Tea." (plain) after "Assistant:" are the same model input.
    plain = {"prompt": "User: tea?\nAssistant:", "chosen": "Tea.", "rejected": "No."}
    chat = {
        "prompt": [{"role": "user", "content": "tea?"}],
        "chosen": [{"role": "assistant", "content": "Tea."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    data = load_preferences(write_jsonl(tmp_path / "d.jsonl", [plain, chat]), tokenizer=tokenizer)
    assert len(data.pairs) == 1 and data.stats["duplicates_removed"] == 1


def test_duplicate_ratings_and_rankings(tmp_path):
    ratings = [
        {"prompt": "p", "response": "a", "rating": 1},
        {"prompt": "p", "response": "a", "rating": 1},  # duplicate
        {"prompt": "p", "response": "b", "rating": 2},
    ]
    data = load_preferences(write_jsonl(tmp_path / "r.jsonl", ratings))
    assert data.stats["duplicates_removed"] == 1 and len(data.pairs) == 1
    rank = {"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]}
    data = load_preferences(write_jsonl(tmp_path / "k.jsonl", [rank, rank, dict(rank, labeller_id="B")]))
    assert len(data.rankings) == 2 and data.stats["duplicates_removed"] == 1


# ----------------------------------------------------------------------------- prompt files


def test_load_prompts_plain_and_messages(tmp_path, tokenizer):
    rows = [
        {"prompt": P, "request_kind": "question"},
        {"prompt": [{"role": "user", "content": "hi"}]},
        {"prompt": P},  # repeated prompts are kept
    ]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    assert load_prompts(path) == [P, "User: hi\nAssistant:", P]
    assert load_prompts(path, tokenizer=tokenizer)[1] == "User: hi\nAssistant:"
    path = write_parquet(tmp_path / "q.parquet", [{"query": "a"}, {"query": "b"}])
    assert load_prompts(path, field="query") == ["a", "b"]
    assert load_prompts(save_dataset(tmp_path / "ds", [{"prompt": "a"}])) == ["a"]


def test_evaluation_data_reads_test_then_validation_and_names_the_split(tmp_path):
    from rlhf.data import choose_split, load_eval_preferences
    from rlhf.errors import UserError

    three = save_dataset(
        tmp_path / "three", None, splits={"train": PAIRS[:1], "validation": PAIRS[1:2], "test": PAIRS[2:]}
    )
    two = save_dataset(tmp_path / "two", None, splits={"train": PAIRS[:2], "validation": PAIRS[2:]})
    only = save_dataset(tmp_path / "only", None, splits={"train": PAIRS})
    # training data keeps "train"; evaluation data prefers "test", then "validation", then a lone split
    assert [choose_split(p) for p in (three, two, only)] == ["train", "train", "train"]
    assert [choose_split(p, purpose="eval") for p in (three, two, only)] == ["test", "validation", "train"]
    assert choose_split(three, "validation", purpose="eval") == "validation"
    assert choose_split(write_jsonl(tmp_path / "p.jsonl", PAIRS), purpose="eval") is None  # a file: no splits

    data, split = load_eval_preferences(tmp_path / "p.jsonl", three, None)
    assert split == "test" and [fields(p) for p in data.pairs] == EXPECTED[2:]
    # no eval file, only a split: that split of the training DatasetDict
    data, split = load_eval_preferences(two, None, "validation")
    assert split == "validation" and [fields(p) for p in data.pairs] == EXPECTED[2:]

    with pytest.raises(UserError, match=r"three has no split 'dev'; it has: train, validation, test$"):
        choose_split(three, "dev", purpose="eval")
    odd = save_dataset(tmp_path / "odd", None, splits={"train": PAIRS[:2], "extra": PAIRS[2:]})
    with pytest.raises(
        UserError, match=r"no split 'test' or 'validation' to evaluate on; it has: train, extra"
    ):
        choose_split(odd, purpose="eval")
    with pytest.raises(UserError, match=r"p.jsonl is not a saved DatasetDict, so it has no split 'test'"):
        load_eval_preferences(tmp_path / "p.jsonl", None, "test")
    with pytest.raises(UserError, match=r"evaluation data is the training data \(.*only split 'train'\)"):
        load_eval_preferences(only, only, None)  # its lone split is the training split
    # a split's own folder is the same rows as that split of the DatasetDict (it was evaluated as held out)
    assert load_preferences(two / "validation").pairs and choose_split(two / "validation") is None
    with pytest.raises(UserError, match=r"evaluation data is the training data \(.*two split 'validation'\)"):
        load_eval_preferences(two / "validation", two, "validation")
    with pytest.raises(UserError, match=r"evaluation data is the training data"):
        load_eval_preferences(
            two, two / "train", None
        )  # trains on dd (its train split), evaluates on dd/train


def test_training_reads_name_the_split_and_take_a_lone_one(tmp_path):
    # a validation-only DatasetDict was unusable as --prompts ("has no split 'train'"), and a DatasetDict
    # with train and test was read at train without a word
    from rlhf.data import load_prompts
    from rlhf.errors import UserError

    only = save_dataset(
        tmp_path / "only_val", None, splits={"validation": [{"prompt": "a"}, {"prompt": "b"}]}
    )
    assert load_prompts(only) == ["a", "b"]
    both = save_dataset(
        tmp_path / "both", None, splits={"train": [{"prompt": "t"}], "test": [{"prompt": "x"}]}
    )
    with pytest.warns(UserWarning, match=r"both: reading its 'train' split \(it has train, test\)"):
        assert load_prompts(both) == ["t"]
    odd = save_dataset(tmp_path / "odd", None, splits={"dev": [{"prompt": "d"}], "test": [{"prompt": "x"}]})
    with pytest.raises(
        UserError,
        match=r"odd has no split 'train' to read; it has: dev, test \(give one split's own folder, e.g. .*odd/dev\)",
    ):
        load_prompts(odd)
