"""The world's stand-in binary labels: a labeller's rating at THUMBS_UP or above is a thumbs up."""

import numpy as np

from rlhf.config_root import load_root_config
from rlhf.data import load_preferences
from rlhf.io import write_jsonl
from rlhf.world import gold
from rlhf.world.binary import THUMBS_UP, binary_rows, thumbs_up
from rlhf.world.panel import Labeller, LabellerSpec


def test_thumbs_up_is_the_rating_at_the_threshold():
    # the same draws as `rate`: the label is exactly "rating >= THUMBS_UP", with the rating's seconds
    labeller = Labeller(LabellerSpec(name="x"))
    prompt, response = "User: what is tea?\nAssistant:", "Tea is a drink made from leaves."
    for seed in range(20):
        rating = labeller.rate(prompt, response, np.random.default_rng(seed))
        label, seconds = thumbs_up(labeller, prompt, response, np.random.default_rng(seed))
        assert label == (rating.score >= THUMBS_UP) and seconds == rating.seconds


def test_rows_read_back_and_thumbs_up_go_to_better_responses(tmp_path):
    rows = binary_rows(load_root_config(), 300, seed=3)
    assert 250 <= len(rows) <= 300  # repeats of one (prompt, response, labeller) are left out
    write_jsonl(tmp_path / "b.jsonl", rows)
    data = load_preferences(tmp_path / "b.jsonl")
    assert data.stats["binary"] == len(rows) and 0 < data.stats["desirable"] < len(rows)
    utility = {True: [], False: []}
    for row in rows:
        utility[row["label"]].append(gold.utility(row["prompt"], row["completion"]))
    # noisy, but the panel's thumbs up go to responses of higher gold utility on average
    assert np.mean(utility[True]) > np.mean(utility[False]) + 0.2, {k: np.mean(v) for k, v in utility.items()}
