"""`rlhf loop --feedback binary`: each picked pair becomes two good / bad tasks answered through the store,
and the round's labels are unpaired rows (prompt, completion, label) for the reward model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.test_loop import tiny_root


def picked_pairs(n: int) -> list[dict]:
    from rlhf.world.corpus import sample_pairs

    return [{"prompt": p, "a": a, "b": b, "objective": "helpful" if i % 2 else "harmless", "priority": float(n - i)}
            for i, (p, a, b) in enumerate(sample_pairs(n, seed=11))]  # fmt: skip


def test_binary_label_phase_asks_two_tasks_a_pair_and_returns_unpaired_rows(tmp_path):
    from rlhf.feedback.store import FeedbackStore
    from rlhf.io import write_jsonl
    from rlhf.loop import LoopConfig, label_phase
    from rlhf.world.panel import PanelConfig

    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")  # both backends: tests/feedback
    cfg = LoopConfig(feedback="binary", overlap_share=0.25, overlap_labellers=2)
    cfg.validate()
    write_jsonl(tmp_path / "picked.jsonl", picked_pairs(8))
    panel = PanelConfig(n_labellers=4, n_spammers=0, n_length_biased=0, n_refusal_preferring=0)
    rows = label_phase(store, tmp_path, cfg, panel, seed=3, log=print)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == 16  # one task per response of each of the 8 pairs
    # 2 of the 8 pairs go to 2 labellers each: (6 * 1 + 2 * 2) pairs' worth x 2 responses = 20 labels
    assert len(rows) == 20 and {type(r["label"]) for r in rows} == {bool}
    assert all(set(r) >= {"prompt", "completion", "label", "labeller_id", "objective"} for r in rows)
    assert "chosen" not in rows[0] and {r["objective"] for r in rows} == {"helpful", "harmless"}
    pairs = picked_pairs(8)
    completions = {(r["prompt"], r["completion"]) for r in rows}
    assert completions == {(p["prompt"], p[side]) for p in pairs for side in ("a", "b")}
    # a resumed round asks nothing new: the same tasks, the same rows
    again = label_phase(store, tmp_path, cfg, panel, seed=3, log=print)
    assert [r["label_id"] for r in again] == [r["label_id"] for r in rows] and store.count_labels() == 20
    store.close()


def test_binary_feedback_settings():
    from rlhf.config import ConfigError
    from rlhf.config_root import load_root_config

    assert load_root_config(None, ["loop.feedback=binary"]).loop.feedback == "binary"
    with pytest.raises(ConfigError, match="loop.feedback must be one of pairwise, binary"):
        load_root_config(None, ["loop.feedback=thumbs"])
    with pytest.raises(ConfigError, match="loop.algorithm=dpo learns from pairs"):
        load_root_config(None, ["loop.feedback=binary", "loop.algorithm=dpo"])


def training_accepts_binary_rows() -> bool:
    """True once the reward trainer's data reader takes unpaired rows (issue #21, the training side)."""
    from rlhf.data import load_preferences
    from rlhf.errors import UserError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unpaired.jsonl"
        path.write_text(
            json.dumps({"prompt": "p", "completion": "good", "label": True}) + "\n"
            + json.dumps({"prompt": "p", "completion": "bad", "label": False}) + "\n"
        )  # fmt: skip
        try:
            load_preferences(path)
        except (UserError, ValueError):
            return False
    return True


@pytest.mark.skipif(
    not training_accepts_binary_rows(),
    reason="reward training does not accept unpaired (binary) rows yet: issue #21, training side",
)
def test_loop_with_binary_feedback_trains_on_unpaired_rows(small_world, tmp_path):
    """Two rounds of the tiny loop asking good / bad questions. Runs once `rlhf reward train` accepts
    unpaired rows (logistic loss on the label); until then the reward phase cannot train on them."""
    from rlhf.io import read_jsonl
    from rlhf.loop import run_loop

    _, world_dir = small_world
    result = run_loop(tiny_root(world_dir, "loop.feedback=binary"), tmp_path / "run", show_progress=False,
                      log=lambda *_: None)  # fmt: skip
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    labels = read_jsonl(tmp_path / "run" / "round_01" / "labels.jsonl")
    assert labels and all(isinstance(r["label"], bool) and "completion" in r for r in labels)
    record = result.rounds[1]
    assert 0 < record["label"]["good"] < record["label"]["labels"] == len(labels)
    assert result.rounds[2]["labels_total"] > result.rounds[1]["labels_total"]
    assert np.isfinite(result.rounds[2]["eval"]["kl"])
