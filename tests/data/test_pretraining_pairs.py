"""Label-free preference-model pretraining pairs: each dialogue's own response over another prompt's."""

from __future__ import annotations

import json

from rlhf.data import load_preferences, pretraining_pairs


def test_own_response_is_chosen_and_the_rejected_one_answers_another_prompt():
    prompts = ["p1", "p2", "p3", "p3"]
    responses = ["r1", "r2", "r3", "r3b"]
    pairs = pretraining_pairs(prompts, responses, seed=0)
    assert len(pairs) == 4  # everyone has another prompt to borrow from
    answer_of = dict(zip(responses, prompts, strict=True))
    for pair in pairs:
        assert answer_of[pair["chosen"]] == pair["prompt"]  # the dialogue's own response is chosen
        assert answer_of[pair["rejected"]] != pair["prompt"]  # never a response to the same prompt
    assert pretraining_pairs(prompts, responses, seed=0) == pairs  # the seed fixes the pairing


def test_groups_draw_negatives_from_the_same_group_and_leave_out_loners():
    prompts = ["a1", "a2", "b1"]
    responses = ["x", "y", "z"]
    pairs = pretraining_pairs(prompts, responses, seed=1, groups=["a", "a", "b"])
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {("x", "y"), ("y", "x")}  # b1 has no partner


def test_cli_writes_pairs_the_reward_trainer_reads(tmp_path, capsys):
    from rlhf.cli import main

    rows = [{"prompt": f"User: q{i}\nAssistant:", "response": f"answer {i}", "task": "t" if i % 2 else "u"}
            for i in range(6)]  # fmt: skip
    data = tmp_path / "dialogues.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pmp.jsonl"
    assert main(["reward", "pmp-pairs", "--data", str(data), "--out", str(out), "--group-field", "task"]) == 0
    assert "wrote 6 pairs" in capsys.readouterr().out
    assert len(load_preferences(str(out)).pairs) == 6
    assert main(["reward", "pmp-pairs", "--data", str(data), "--out", str(out), "--group-field", "nope"]) != 0
    assert "has no field 'nope'" in capsys.readouterr().err
