"""Reading and validating preference data (pairs, K-way rankings, ratings, binary labels) and RL prompt
files.

- `records`:     `PreferencePair`, `RankingExample`, `BinaryExample`, `PreferenceData`, `join_prompt_response`,
                 `write_preferences`
- `readers`:     rows from JSONL / Parquet / `datasets` folders (`choose_split`: which split of a
                 `DatasetDict`); chat messages rendered to text
- `preferences`: `load_preferences`, `load_eval_preferences`, `load_train_eval`, `load_prompts`,
                 `split_by_prompt`
                 (validation, duplicates, ratings -> pairs)

The formats, fields and rules are documented in docs/data.md.
"""

from rlhf.data.preferences import (
    KINDS,
    load_eval_preferences,
    load_preferences,
    load_prompts,
    load_train_eval,
    split_by_prompt,
)
from rlhf.data.readers import choose_split
from rlhf.data.records import (
    BinaryExample,
    PreferenceData,
    PreferencePair,
    RankingExample,
    join_prompt_response,
    write_preferences,
)
from rlhf.data.responses import (
    RewardedResponse,
    load_rewarded_responses,
    pretraining_pairs,
    read_response_rows,
)

__all__ = [
    "BinaryExample",
    "KINDS",
    "PreferenceData",
    "PreferencePair",
    "RankingExample",
    "choose_split",
    "join_prompt_response",
    "load_eval_preferences",
    "load_preferences",
    "load_prompts",
    "load_train_eval",
    "RewardedResponse",
    "load_rewarded_responses",
    "pretraining_pairs",
    "read_response_rows",
    "split_by_prompt",
    "write_preferences",
]
