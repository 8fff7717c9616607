"""split_by_prompt: no prompt on both sides, every record on exactly one, deterministic, never empty."""

import pytest

from rlhf.data import PreferenceData, PreferencePair, RankingExample, split_by_prompt
from rlhf.errors import UserError


def make_data(n_prompts: int) -> PreferenceData:
    pairs = [
        PreferencePair(f"prompt {i}", f"good {j}", f"bad {j}", labeller_id=str(j))
        for i in range(n_prompts)
        for j in range(3)
    ]
    rankings = [RankingExample(f"prompt {i}", ("a", "b"), ((0,), (1,))) for i in range(0, n_prompts, 2)]
    return PreferenceData(pairs, rankings, {})


def test_split_is_disjoint_complete_and_deterministic():
    data = make_data(200)
    train, evals = split_by_prompt(data, eval_fraction=0.2, seed=1)
    assert not train.prompts() & evals.prompts()
    assert train.prompts() | evals.prompts() == data.prompts()
    assert sorted(train.pairs + evals.pairs, key=repr) == sorted(data.pairs, key=repr)
    assert len(train.rankings) + len(evals.rankings) == len(data.rankings) == 100
    # each prompt goes to eval with probability 0.2: 40 of 200 expected, sd = sqrt(200 * 0.2 * 0.8) = 5.7
    assert 20 <= evals.stats["prompts"] <= 60
    assert evals.stats["pairs"] == 3 * evals.stats["prompts"]
    again = split_by_prompt(data, eval_fraction=0.2, seed=1)
    assert (again[0].pairs, again[1].pairs) == (train.pairs, evals.pairs)
    assert split_by_prompt(data, eval_fraction=0.2, seed=2)[1].prompts() != evals.prompts()


def test_a_prompts_side_does_not_depend_on_the_other_prompts():
    small = split_by_prompt(make_data(100), eval_fraction=0.3, seed=0)[1].prompts()
    large = split_by_prompt(make_data(300), eval_fraction=0.3, seed=0)[1].prompts()
    assert small == {p for p in large if int(p.split()[1]) < 100}


def test_both_sides_non_empty_with_two_prompts():
    data = make_data(2)
    for fraction in (0.001, 0.999):
        for seed in range(5):
            train, evals = split_by_prompt(data, fraction, seed)
            assert len(train.prompts()) == len(evals.prompts()) == 1


def test_split_errors():
    with pytest.raises(UserError, match="1 distinct prompt"):
        split_by_prompt(make_data(1), 0.5, 0)
    with pytest.raises(UserError, match=r"eval_fraction must be in \(0, 1\); got 1.0"):
        split_by_prompt(make_data(5), 1.0, 0)
