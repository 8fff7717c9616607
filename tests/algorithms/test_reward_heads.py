"""A reward head no training pair reaches: counted by hand, reported at training, recorded in the saved
model and refused as a reward or cost weight; `objective` on imported tasks trains each head."""

from __future__ import annotations

import json
import random
import warnings

import pytest

from rlhf.algorithms.reward import RewardConfig, pairs_per_head, train, untrained_heads_message
from rlhf.config import ConfigError, RunConfig
from rlhf.data import PreferenceData, PreferencePair, RankingExample
from rlhf.errors import UserError
from rlhf.io import write_jsonl
from rlhf.reward_model import REWARD_CONFIG
from rlhf.rewards import load_reward_source

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)
WORDS = "the a cat sat on mat and then went home to sleep while it rained".split()


def rows(n: int, seed: int, objective: str | None = None) -> list[dict]:
    """Pairs where the chosen answer says 'blue' and the rejected one 'red', as `rlhf label export` writes
    them (no `objective` unless the task had one)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chosen, rejected = (" ".join(rng.sample(WORDS, 4) + [c]) for c in ("blue", "red"))
        row = {"prompt": f"User: question {seed}-{i}?\nAssistant:", "chosen": chosen, "rejected": rejected}
        out.append(row if objective is None else {**row, "objective": objective})
    return out


def quick(data, model, tmp_path, **more) -> RewardConfig:
    """One epoch on every row of `data` (evaluated on a separate file, so the counts are exact)."""
    write_jsonl(tmp_path / "eval.jsonl", rows(4, seed=99, objective="helpful"))
    return RewardConfig(data=str(data), model=str(model), epochs=1, batch_size=8, lr=3e-3, eval_every=0,
                        gold_eval=False, max_length=48, eval_data=str(tmp_path / "eval.jsonl"), **more)  # fmt: skip


def test_pairs_per_head_by_hand():
    pair = lambda objective: PreferencePair("p", "a", "b", objective=objective)  # noqa: E731
    ranking = RankingExample("q", ("x", "y", "z"), ((0,), (1,), (2,)), objective="helpful")  # 3 pairs
    data = PreferenceData([pair(None), pair(None), pair(None), pair("harmless"), pair("harmless")], [ranking])
    # helpful: the 3 pairs without an objective (first head) + the ranking's 3 = 6; harmless: 2
    assert pairs_per_head(data, ["helpful", "harmless"]) == ({"helpful": 6, "harmless": 2}, 3)
    counts, unnamed = pairs_per_head(data, ["helpful", "harmless", "honest"])
    assert counts == {"helpful": 6, "harmless": 2, "honest": 0}
    assert untrained_heads_message(counts, unnamed, "pairs.jsonl") == (
        "pairs.jsonl: reward head 'honest' got no training pairs (pairs per head: helpful 6, harmless 2, "
        "honest 0; 3 name no `objective` and train the first head, 'helpful'), so its weights stay random "
        "and rlhf refuses it as a reward or cost weight; set `objective` on the rows (for `rlhf label "
        'import` tasks: "objective": "honest")'
    )
    assert untrained_heads_message({"helpful": 6, "harmless": 2}, 3, "pairs.jsonl") is None


def test_a_head_without_pairs_is_reported_recorded_and_refused_as_a_cost(tiny_lm_dir, tmp_path):
    """The tutorial's step 4 on labels exported from tasks imported without `objective`: every pair
    trained 'helpful'; 'harmless' kept its random weights, and step 5 ran PPO against them as the cost."""
    write_jsonl(tmp_path / "pairs.jsonl", rows(40, seed=1))
    out = tmp_path / "rm"
    cfg = quick(tmp_path / "pairs.jsonl", tiny_lm_dir, tmp_path, objectives=["helpful", "harmless"])
    with pytest.warns(UserWarning, match=r"reward head 'harmless' got no training pairs \(pairs per head: "
                      r"helpful 40, harmless 0; 40 name no `objective`"):  # fmt: skip
        train(cfg, RUN, out, show_progress=False)
    assert json.loads((out / REWARD_CONFIG).read_text())["training_pairs"] == {"helpful": 40, "harmless": 0}
    with pytest.raises(UserError) as error:
        load_reward_source(str(out), {"harmless": -1.0}, device="cpu")  # ppo.cost_weights={harmless: -1.0}
    message = str(error.value)
    assert "reward head 'harmless' was trained on 0 pairs (pairs per head: helpful 40, harmless 0)" in message
    assert "\n" not in message and 'tasks: "objective": "harmless"' in message
    with pytest.raises(UserError, match="'harmless' was trained on 0 pairs"):
        load_reward_source(str(out), {"helpful": 1.0, "harmless": 0.5}, device="cpu")
    score = load_reward_source(str(out), {"helpful": 1.0, "harmless": 0.0}, device="cpu")  # 0: not used
    assert score(["User: hi\nAssistant:"], ["blue sky"]).shape == (1,)
    load_reward_source(str(out), device="cpu")  # no weights: the first head, 'helpful', which trained
    with pytest.warns(UserWarning, match=r"has heads helpful, harmless; --judge-weights not given, so the score "
                      r"is the first head, 'helpful'"):  # fmt: skip
        load_reward_source(str(out), device="cpu", setting="--judge-weights")  # rlhf eval --judge RM_DIR


@pytest.mark.parametrize(
    "args, message",
    [
        (["--judge-weights", "{helpful:1.0}"], "put a space after the colon, e.g. {helpful: 1.0}"),
        (["--judge-weights", "helpful"], "expected head names with numbers"),
        (["--judge-weights", "{helpful: high}"], "expected head names with numbers"),
        (["--judge", "gold", "--judge-weights", "{helpful: 1}"], "--judge gold is not a reward model"),
    ],
)
def test_eval_judge_weights_that_cannot_be_used_are_one_line(args, message, capsys):
    from rlhf.cli import main

    assert main(["eval", "--policy", "world", *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_objective_on_imported_tasks_trains_each_head(tiny_lm_dir, tmp_path, capsys):
    """Tutorial step 3 then 4: tasks imported with `--objective`, labelled, exported, trained on."""
    from rlhf.cli import main
    from rlhf.feedback.records import LabelIn, StoreSettings
    from rlhf.feedback.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'labels.db'}"
    for objective, seed in (("helpful", 2), ("harmless", 3)):
        tasks = [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]} for r in rows(20, seed)]
        write_jsonl(tmp_path / f"{objective}.jsonl", tasks)
        assert main(["label", "import", str(tmp_path / f"{objective}.jsonl"), "--objective", objective,
                     "--db", db]) == 0  # fmt: skip
    write_jsonl(tmp_path / "own.jsonl", [{"prompt": "User: own?\nAssistant:", "responses": ["blue", "red"],
                                          "objective": "helpful"}])  # fmt: skip
    assert main(["label", "import", str(tmp_path / "own.jsonl"), "--objective", "harmless", "--db", db]) == 0
    store = FeedbackStore(db, StoreSettings())
    alice, _ = store.add_labeller("alice", onboarded=True)
    while (task := store.next_task(alice.id)) is not None:
        blue = next(r.id for r in task.responses if r.text.endswith("blue"))
        store.submit_label(alice.id, LabelIn(task.id, f"r{task.id}", choice=blue, strength="better"))
    store.close()
    assert main(["label", "export", "--out", str(tmp_path / "pairs.jsonl"), "--db", db]) == 0
    exported = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    # 20 + 20 tasks; the row's own objective wins over --objective
    assert [r["objective"] for r in exported] == ["helpful"] * 20 + ["harmless"] * 20 + ["helpful"]
    capsys.readouterr()

    cfg = quick(tmp_path / "pairs.jsonl", tiny_lm_dir, tmp_path, objectives=["helpful", "harmless"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, RUN, tmp_path / "rm", show_progress=False)
    assert not [w for w in caught if "got no training pairs" in str(w.message)]
    trained = json.loads((tmp_path / "rm" / REWARD_CONFIG).read_text())["training_pairs"]
    assert trained == {"helpful": 21, "harmless": 20}  # 20 tasks + the one whose own objective won; 20
    load_reward_source(str(tmp_path / "rm"), {"harmless": -1.0}, device="cpu")  # the cost of step 5


def test_loop_refuses_a_safety_head_its_rounds_never_label():
    from rlhf.loop import LoopConfig

    with pytest.raises(ConfigError, match=r"loop.safety=lagrangian uses the harmless head, but "
                       r"loop.harmless_share=0.0 of 600 comparisons gives it no labels"):  # fmt: skip
        LoopConfig(harmless_share=0.0).validate()
    with pytest.raises(ConfigError, match="loop.safety=weighted"):
        LoopConfig(safety="weighted", labels_per_round=1, harmless_share=0.25).validate()  # round(0.25) = 0
    LoopConfig(safety="none", harmless_share=0.0).validate()  # the harmless head is never used
    LoopConfig(algorithm="dpo", harmless_share=0.0).validate()  # DPO learns from the labels directly


def test_a_cost_directory_without_weights_and_scores_of_untrained_heads_say_so(tiny_lm_dir, tmp_path, capsys):
    """`ppo.cost=RM_DIR` without `ppo.cost_weights` took the first head (helpful) as the cost, so PPO
    penalised helpfulness; `rlhf reward score` wrote a random head as `score` without a word."""
    from rlhf.algorithms.ppo import PPOConfig
    from rlhf.algorithms.ppo import train as ppo_train
    from rlhf.cli import main
    from rlhf.config import ConfigError

    write_jsonl(tmp_path / "pairs.jsonl", [{**r, "objective": "helpful"} for r in rows(40, seed=1)])
    out = tmp_path / "rm"  # the first head, 'harmless', gets no pairs
    cfg = quick(tmp_path / "pairs.jsonl", tiny_lm_dir, tmp_path, objectives=["harmless", "helpful"])
    with pytest.warns(UserWarning, match="reward head 'harmless' got no training pairs"):
        train(cfg, RUN, out, show_progress=False)
    ppo_cfg = PPOConfig(
        policy=str(tiny_lm_dir), reward=str(out), cost=str(out), reward_weights={"helpful": 1.0}
    )
    with pytest.raises(ConfigError, match=r"ppo.cost_weights is empty, so the cost would be its first head"):
        ppo_train(ppo_cfg, RUN, tmp_path / "policy", show_progress=False)
    with pytest.raises(UserError, match=r"ppo.cost_weights name heads \['Harmless'\]"):
        load_reward_source(str(out), {"Harmless": -1.0}, device="cpu", setting="ppo.cost_weights")
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "User: hi\nAssistant:", "response": "blue sky"}])
    with pytest.warns(UserWarning, match=r"head\(s\) harmless were trained on 0 pairs: their scores are random "
                      r"\(and `score` is the first head\)"):  # fmt: skip
        assert main(["reward", "score", "--model", str(out), "--data", str(tmp_path / "rows.jsonl"),
                     "--out", str(tmp_path / "s.jsonl"), "--device", "cpu"]) == 0  # fmt: skip
