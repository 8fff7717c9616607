"""The world's binary labels: the simulated panel's own thumbs up or down."""

import numpy as np

from rlhf.config_root import load_root_config
from rlhf.data import load_preferences
from rlhf.io import write_jsonl
from rlhf.world import gold
from rlhf.world.binary import binary_rows


def test_each_row_is_the_panels_own_binary_answer():
    # the same draws as `Labeller.judge`, in the order binary_rows makes them: label and seconds equal
    from rlhf.world.panel import make_panel

    cfg = load_root_config()
    rows = binary_rows(cfg, 20, seed=4)
    rng, panel = np.random.default_rng(4), make_panel(cfg.panel)
    for row in rows:
        labeller = panel.labellers[int(rng.integers(len(panel.labellers)))]
        answer = labeller.judge(row["prompt"], row["completion"], rng)
        assert (row["labeller_id"], row["label"], row["seconds"]) == (
            labeller.spec.name,
            answer.good,
            answer.seconds,
        )


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
