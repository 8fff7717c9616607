"""The record types: the joining rule, ranking -> pairs counts, and writing pairs back as JSONL."""

import json

import pytest

from rlhf.data import (
    PreferencePair,
    RankingExample,
    join_prompt_response,
    load_preferences,
    write_preferences,
)


@pytest.mark.parametrize(
    ("prompt", "response", "joined"),
    [
        ("User: hi\nAssistant:", "Hello.", "User: hi\nAssistant: Hello."),  # the world's format: add a space
        ("User: hi\nAssistant:", " Hello.", "User: hi\nAssistant: Hello."),  # TRL: space already in response
        ("<|user|>hi\n<|assistant|>\n", "Hello.", "<|user|>hi\n<|assistant|>\nHello."),  # template ends in \n
        ("Q: hi ", "Hello.", "Q: hi Hello."),
        ("", "Hello.", "Hello."),
        ("Q:", "", "Q:"),
        ("Q:", "\nHello.", "Q:\nHello."),
    ],
)
def test_join_prompt_response(prompt, response, joined):
    assert join_prompt_response(prompt, response) == joined


def _ranking(groups, k):
    return RankingExample(prompt="p", responses=tuple("abcdefgh"[:k]), ranking=groups, labeller_id="L")


def test_strict_ranking_of_three_gives_three_ordered_pairs():
    # 2 > 0 > 1: (2,0), (2,1), (0,1) = K(K-1)/2 = 3 pairs, none tied
    pairs = _ranking(((2,), (0,), (1,)), 3).pairs()
    assert [(p.chosen, p.rejected, p.tie) for p in pairs] == [
        ("c", "a", False),
        ("c", "b", False),
        ("a", "b", False),
    ]
    assert all(p.labeller_id == "L" and p.prompt == "p" for p in pairs)


def test_ranking_with_a_tie_group_gives_strict_and_tie_pairs():
    # [[0, 1], [2]]: 0 > 2 and 1 > 2 (2 strict), 0 ~ 1 (1 tie)
    pairs = _ranking(((0, 1), (2,)), 3).pairs()
    assert [(p.chosen, p.rejected, p.tie) for p in pairs] == [
        ("a", "c", False),
        ("b", "c", False),
        ("a", "b", True),
    ]
    # ((2,), (0, 1), (3,)): strict = 1*2 + 1*1 + 2*1 = 5, ties = 1 -> 6 = C(4, 2)
    pairs = _ranking(((2,), (0, 1), (3,)), 4).pairs()
    assert (sum(not p.tie for p in pairs), sum(p.tie for p in pairs)) == (5, 1)


def test_write_preferences_round_trips(tmp_path):
    pairs = [
        PreferencePair("User: a\nAssistant:", "good", "bad"),
        PreferencePair(
            "User: b\nAssistant:", "x", "y", margin=1.5, weight=2.0, labeller_id="7", objective="harmless"
        ),
        PreferencePair("User: c\nAssistant:", "same", "same", tie=True),
    ]
    path = tmp_path / "out.jsonl"
    assert write_preferences(path, pairs) == 3
    # defaults are left out of the rows
    assert json.loads(path.read_text().splitlines()[0]) == {
        "prompt": "User: a\nAssistant:",
        "chosen": "good",
        "rejected": "bad",
    }
    back = load_preferences(path).pairs
    assert [
        (p.prompt, p.chosen, p.rejected, p.margin, p.weight, p.labeller_id, p.objective, p.tie) for p in back
    ] == [
        (p.prompt, p.chosen, p.rejected, p.margin, p.weight, p.labeller_id, p.objective, p.tie) for p in pairs
    ]
    assert [p.source for p in back] == ["out.jsonl:1", "out.jsonl:2", "out.jsonl:3"]
