"""Win rates by hand, and `rlhf eval` end to end on the small world."""

import json

import pytest

from rlhf.evaluation import win_rate


def test_win_rate_by_hand():
    # wins on prompts 1 and 4, a tie on 2, a loss on 3: (2 + 0.5) / 4 = 0.625
    rate, stats = win_rate([1.0, 0.5, 0.0, 2.0], [0.0, 0.5, 1.0, 1.0])
    assert rate == pytest.approx(0.625)
    assert stats == pytest.approx({"win_rate": 0.625, "wins": 0.5, "ties": 0.25, "losses": 0.25})
    with pytest.raises(ValueError, match="equal, non-empty"):
        win_rate([1.0], [1.0, 2.0])


def test_eval_cli_policy_against_itself_is_a_tie(small_world, tmp_path, capsys):
    from rlhf.cli import main

    _, world_dir = small_world
    code = main(["eval", "--policy", str(world_dir), "--baseline", str(world_dir), "--n", "16", "--max-new-tokens", "8",
                 "--json", str(tmp_path / "eval.json"), "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval.json").read_text())
    # the same model sampled with the same seed: the same responses, every prompt a tie, KL 0
    assert result["win_rate"] == 0.5 and result["ties"] == 1.0
    assert result["kl_to_baseline"] == pytest.approx(0.0, abs=1e-5)
    assert result["policy_gold_helpfulness"] == result["baseline_gold_helpfulness"]
    code = main(["eval", "--policy", str(world_dir), "--baseline", str(world_dir), "--judge", "tests.algorithms.test_ppo:brevity", "--n", "8",
                 "--max-new-tokens", "8", "--set", "run.device=cpu", "--set", "run.progress=false"])  # fmt: skip
    assert code == 0 and "win_rate" in capsys.readouterr().out
