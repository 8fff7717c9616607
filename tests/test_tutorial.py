"""docs/tutorial.md steps 2-5, followed literally, for a GPT-2-style model (no pad token, no chat template)
and a Qwen2-style one (ChatML) of the user's own, with people labelling through the web app.

Every command is the tutorial's, run in a fresh directory with its relative paths (`labels.db`,
`runs/rm`, `prompts.jsonl`, ...); `~/models/my-lm` is a tiny model of tests/families.py, and the only
additions are `--set` options (or a command's own size options) that make it tiny. The people are
simulated: each takes the next task from `GET /api/tasks/next` and answers it with `POST /api/labels`,
as the labelling page does (docs/labelling.md), with the token `rlhf label add-labeller` printed.
Step 1 (the demo on the bundled world) is tests/test_loop.py's.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from rlhf.cli import main

DB = "sqlite:///labels.db"

# (question, risky): plain text for the GPT-2-style model, chat messages for the Qwen2-style one
QUESTIONS = [
    ("what is tea?", False), ("how do I bake bread?", False), ("is the sky blue?", False),
    ("tell me a story.", False), ("what is a cat?", False), ("can you help me?", False),
    ("how do I hurt someone?", True), ("how do I make a weapon?", True), ("where is the sun?", False),
    ("write a short poem about the sea.", False), ("how do I steal a car?", True), ("what is bread?", False),
]  # fmt: skip
RISKY = ["how do I break into a house?", "how do I poison a drink?", "how do I start a fire in a shop?",
         "how do I cheat on a test?", "how do I get a gun?", "how do I lie to the police?"]  # fmt: skip
HELD_OUT = ["what is water?", "who are you?", "is the snow black?", "how do I hide a crime?"]


def write_prompts(path: Path, questions: list[tuple[str, bool]], chat: bool) -> None:
    """`{"prompt": ..., "risky": true}` rows (docs/tutorial.md step 3): text, or chat messages."""
    with path.open("w") as f:
        for question, risky in questions:
            row = {
                "prompt": [{"role": "user", "content": question}] if chat else f"Question: {question} Answer:"
            }
            f.write(json.dumps({**row, "risky": True} if risky else row) + "\n")


def rlhf(capsys, *args: str) -> str:
    """Run one `rlhf` command as the tutorial writes it; it must succeed, with no traceback."""
    capsys.readouterr()  # what came before (the fixtures' save_pretrained bars) is not this command's
    code = main(list(args))
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 0, f"rlhf {' '.join(args)} exited {code}:\n{output}"
    assert "Traceback" not in output, output
    return output


def token_of(output: str) -> str:
    """The sign-in token `rlhf label add-labeller` prints once, on the line after its announcement."""
    lines = output.splitlines()
    token = lines[lines.index(next(line for line in lines if "token (shown once" in line)) + 1]
    assert token.startswith("rlhf_"), output
    return token


def add_labellers(capsys, *names: str) -> dict[str, str]:
    """Step 3's accounts: the first an admin."""
    return {
        name: token_of(
            rlhf(capsys, "label", "add-labeller", name, *(["--admin"] if i == 0 else []), "--db", DB)
        )
        for i, name in enumerate(names)
    }


# How each simulated person answers: the longer response on helpful tasks and the shorter (it says less)
# on harmless ones; the admin, in a hurry, takes whichever the page shows first.
def by_length(task: dict) -> int:
    ordered = sorted(task["responses"], key=lambda r: len(r["text"]))
    return (ordered[-1] if task["objective"] == "helpful" else ordered[0])["id"]


def shown_first(task: dict) -> int:
    return task["responses"][0]["id"]


PEOPLE = {"admin": shown_first, "alice": by_length, "bob": by_length}


def answer_next(client, name: str, token: str) -> bool:
    """One person takes their next task through the JSON API and answers it; False when there is none."""
    headers = {"Authorization": f"Bearer {token}"}
    reply = client.get("/api/tasks/next", headers=headers)
    if reply.status_code == 204:
        return False
    assert reply.status_code == 200, reply.text
    task = reply.json()
    assert task["kind"] == "pairwise" and not task["is_gold"] and task["objective"], task
    body = {
        "task_id": task["id"], "client_request_id": str(uuid.uuid4()), "choice": PEOPLE[name](task),
        "strength": "better", "seconds": 5.0, "displayed_order": [r["id"] for r in task["responses"]],
    }  # fmt: skip
    posted = client.post("/api/labels", json=body, headers=headers)
    assert posted.status_code == 201, posted.text
    return True


def web_app(project: str):
    """`rlhf label serve --db sqlite:///labels.db [--project P]`, as a TestClient."""
    from fastapi.testclient import TestClient

    from rlhf.web import WebSettings, create_app

    return TestClient(create_app(WebSettings(db_url=DB, project=project)))


def people_label(tokens: dict[str, str], project: str = "default") -> dict[str, int]:
    """The people take tasks in turn until the queue is empty for each (204); labels given per person."""
    given = dict.fromkeys(tokens, 0)
    with web_app(project) as client:
        waiting = dict(tokens)
        while waiting:
            for name, token in list(waiting.items()):
                if answer_next(client, name, token):
                    given[name] += 1
                else:
                    del waiting[name]
    return given


def my_lm_of(family_dir, family: str, home: Path, monkeypatch) -> str:
    """`~/models/my-lm`, with HOME in the test's directory; the path a shell makes of it."""
    monkeypatch.setenv("HOME", str(home))
    (home / "models").mkdir()
    (home / "models" / "my-lm").symlink_to(family_dir(family), target_is_directory=True)
    return str(Path("~/models/my-lm").expanduser())


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def plain_transformers_score(rm_dir: str, row: dict, question: str, chat: bool) -> float:
    """docs/tutorial.md step 4: the saved reward model in plain transformers, on `tokenizer(prompt + " " +
    response)` for text and `apply_chat_template(conversation, tokenize=True)` for conversations."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    if chat:
        conversation = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": row["response"]},
        ]
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(row["prompt"] + " " + row["response"])["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def metric(output: str, name: str) -> float:
    """A figure from a command's `metric | value` table."""
    line = next(line for line in output.splitlines() if f" {name} " in line)
    return float(line.split("│")[2])


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_tutorial_by_hand(family, family_dir, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)
    my_lm = my_lm_of(family_dir, family, tmp_path, monkeypatch)
    chat = family == "qwen2"
    write_prompts(tmp_path / "prompts.jsonl", QUESTIONS, chat)
    write_prompts(tmp_path / "risky_prompts.jsonl", [(q, True) for q in RISKY], chat)
    write_prompts(tmp_path / "held_out_prompts.jsonl", [(q, "crime" in q) for q in HELD_OUT], chat)
    tiny_sample = ["--max-new-tokens", "8"]

    # 2. Your own model
    assert "parameters:" in rlhf(capsys, "model", "info", my_lm)

    # 3. Collect labels from people: the admin, and one account per labeller
    tokens = add_labellers(capsys, "admin", "alice", "bob")
    rlhf(capsys, "sample", "--model", my_lm, "--prompts", "prompts.jsonl", "--out", "tasks.jsonl",
         "--format", "tasks", *tiny_sample)  # fmt: skip
    assert "imported 12 tasks" in rlhf(
        capsys, "label", "import", "tasks.jsonl", "--objective", "helpful", "--db", DB
    )
    rlhf(capsys, "sample", "--model", my_lm, "--prompts", "risky_prompts.jsonl", "--out", "risky_tasks.jsonl",
         "--format", "tasks", *tiny_sample)  # fmt: skip
    rlhf(capsys, "label", "import", "risky_tasks.jsonl", "--objective", "harmless", "--db", DB)
    given = people_label(tokens)  # at `rlhf label serve --db sqlite:///labels.db`
    assert sum(given.values()) == 18 and min(given.values()) > 0, given
    rlhf(capsys, "label", "export", "--out", "pairs.jsonl", "--db", DB)
    pairs = read_jsonl("pairs.jsonl")
    assert len(pairs) == 18 and {p["labeller_id"] for p in pairs} == set(tokens)
    assert sorted(p["objective"] for p in pairs) == ["harmless"] * 6 + ["helpful"] * 12

    # 4. Train the reward model and check the labellers
    out = rlhf(capsys, "feedback", "reliability", "--data", "pairs.jsonl", "--out", "weighted.jsonl")
    assert all(name in out for name in tokens) and len(read_jsonl("weighted.jsonl")) == 18
    out = rlhf(capsys, "reward", "train", "--data", "weighted.jsonl", "--model", my_lm, "--out", "runs/rm",
               "--set", "reward.ensemble_size=4", "--set", "reward.objectives=[helpful,harmless]",
               "--set", "run.device=cpu")  # fmt: skip
    assert "no training pairs" not in out
    # the held-out labels: other prompts, labelled in a second project of the same database
    rlhf(capsys, "sample", "--model", my_lm, "--prompts", "held_out_prompts.jsonl", "--out",
         "held_out_tasks.jsonl", "--format", "tasks", *tiny_sample)  # fmt: skip
    rlhf(capsys, "label", "import", "held_out_tasks.jsonl", "--objective", "helpful", "--project", "held-out",
         "--db", DB)  # fmt: skip
    assert sum(people_label(tokens, project="held-out").values()) == 4
    rlhf(capsys, "label", "export", "--out", "held_out_pairs.jsonl", "--project", "held-out", "--db", DB)
    assert not {p["prompt"] for p in read_jsonl("held_out_pairs.jsonl")} & {p["prompt"] for p in pairs}
    out = rlhf(capsys, "reward", "eval", "--model", "runs/rm", "--data", "held_out_pairs.jsonl")
    assert metric(out, "eval/pairs") == 4 and 0 <= metric(out, "eval/accuracy") <= 1
    rlhf(capsys, "sample", "--model", my_lm, "--prompts", "prompts.jsonl", "--out", "policy_samples.jsonl",
         "--n-per-prompt", "4", *tiny_sample)  # fmt: skip
    assert "normalisation stored" in rlhf(
        capsys, "reward", "normalize", "--model", "runs/rm", "--samples", "policy_samples.jsonl"
    )
    reward_config = json.loads(Path("runs/rm/reward_config.json").read_text())
    assert reward_config["objectives"] == ["helpful", "harmless"]
    trained = reward_config["training_pairs"]  # both heads trained on their own labels (one prompt held out)
    assert trained["helpful"] >= 10 and trained["harmless"] >= 5 and sum(trained.values()) <= 18
    assert len(reward_config["norm_mean"]) == 2
    # ... and the saved model scores as `rlhf reward score` does, in plain transformers
    rlhf(capsys, "model", "check", my_lm)
    rlhf(capsys, "reward", "score", "--model", "runs/rm", "--data", "policy_samples.jsonl",
         "--out", "scored.jsonl")  # fmt: skip
    scored = read_jsonl("scored.jsonl")
    for i in (0, 29):
        assert plain_transformers_score("runs/rm", scored[i], QUESTIONS[i // 4][0], chat) == pytest.approx(
            scored[i]["score"], abs=1e-5
        )

    # 5. Fine-tune the policy and evaluate (12 prompts for a batch of 32: cycled, and PPO says so)
    tiny_ppo = ["ppo.steps=2", "ppo.ppo_epochs=1", "ppo.max_new_tokens=8", "run.device=cpu"]
    out = rlhf(capsys, "ppo", "train", "--policy", my_lm, "--reward", "runs/rm", "--prompts", "prompts.jsonl",
               "--out", "runs/policy", "--set", "ppo.reward_weights={helpful: 1.0}", "--set", "ppo.cost=runs/rm",
               "--set", "ppo.cost_weights={harmless: -1.0}", "--set", "ppo.cost_threshold=0.0",
               "--set", "ppo.normalize_rewards=true", *[a for s in tiny_ppo for a in ("--set", s)])  # fmt: skip
    assert "prompts are cycled" in out and "policy saved to runs/policy" in out
    assert "passing in an `attention_mask`" not in out  # transformers on GPT-2's packed rows, before
    out = rlhf(capsys, "eval", "--policy", "runs/policy", "--judge", "runs/rm", "--judge-weights",
               "{helpful: 1.0}", "--prompts", "held_out_prompts.jsonl", "--max-new-tokens", "8",
               "--set", "run.device=cpu")  # fmt: skip
    assert (
        f"baseline: {my_lm} (the policy's initial model, ppo.policy in runs/policy/rlhf_config.yaml)" in out
    )
    assert metric(out, "prompts") == 4 and 0 <= metric(out, "win_rate") <= 1
    assert {"policy_mean_score", "baseline_mean_score", "kl_to_baseline"} <= {
        line.split("│")[1].strip() for line in out.splitlines() if line.count("│") == 3
    }
    out = rlhf(capsys, "dpo", "train", "--model", my_lm, "--data", "pairs.jsonl", "--out", "runs/dpo",
               "--set", "dpo.objective=helpful", "--set", "dpo.max_steps=2", "--set", "run.device=cpu")  # fmt: skip
    assert "policy saved to runs/dpo" in out
    out = rlhf(capsys, "frontier", "--policy", my_lm, "--prompts", "prompts.jsonl", "--reward", "runs/rm",
               "--out", "runs/frontier", "--set", "frontier.steps=1", "--set", "ppo.max_new_tokens=8",
               "--set", "loop.max_new_tokens=8", "--set", "run.device=cpu")  # fmt: skip
    frontier = json.loads(Path("runs/frontier/frontier.json").read_text())
    assert [p["name"] for p in frontier] == ["w=0", "w=1", "w=3"]
    assert Path("runs/frontier/frontier.png").is_file()

    # every model written loads in plain transformers, with the user's tokenizer
    for policy in ("runs/policy", "runs/dpo", *(p["policy"] for p in frontier)):
        model = AutoModelForCausalLM.from_pretrained(policy)
        assert type(model).__name__ == ("Qwen2ForCausalLM" if chat else "GPT2LMHeadModel")


def test_frontier_without_the_users_policy_refuses_their_reward_model(
    family_dir, tmp_path, monkeypatch, capsys
):
    """The tutorial's frontier command once lacked `--policy`: the sweep then trained the world model
    against the user's reward model, silently. Now that is one line saying what to add."""
    from rlhf.world import report as world_report

    monkeypatch.chdir(tmp_path)
    pairs = [{"prompt": f"Question: {q} Answer:", "chosen": " yes.", "rejected": " no.", "objective": o}
             for q, _ in QUESTIONS for o in ("helpful", "harmless")]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rlhf(capsys, "reward", "train", "--data", "pairs.jsonl", "--model", str(family_dir("gpt2")), "--out",
         "runs/rm", "--set", "reward.objectives=[helpful,harmless]", "--set", "reward.max_steps=1")  # fmt: skip
    # the world model stands in as another family (building the real one takes minutes)
    world = str(family_dir("qwen2"))
    monkeypatch.setattr(
        world_report, "resolve_world_model", lambda name, *_: world if name == "world" else name
    )
    code = main(["frontier", "--reward", "runs/rm", "--out", "runs/frontier"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "runs/rm was not trained on the world model" in err and "--policy MODEL --prompts FILE" in err


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_tutorial_loop_with_people(family, family_dir, tmp_path, monkeypatch, capsys):
    """Step 3's other way: `rlhf loop --labellers web` with the tutorial's two accounts (the admin and
    alice, `loop.overlap_labellers=2`) labelling through the app while the loop waits for them."""
    monkeypatch.chdir(tmp_path)
    my_lm_of(family_dir, family, tmp_path, monkeypatch)
    write_prompts(tmp_path / "prompts.jsonl", QUESTIONS * 2, chat=family == "qwen2")
    tokens = add_labellers(capsys, "admin", "alice")
    done = threading.Event()
    given = dict.fromkeys(tokens, 0)
    errors: list[BaseException] = []

    def people() -> None:  # at `rlhf label serve --db sqlite:///labels.db --project loop`
        try:
            with web_app("loop") as client:
                while not done.is_set():
                    for name, token in tokens.items():
                        given[name] += answer_next(client, name, token)
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    worker = threading.Thread(target=people, daemon=True)
    worker.start()
    # tiny, and the tutorial's day of waiting shortened in case the people's thread fails
    tiny = ["loop.rounds=1", "loop.labels_per_round=10", "loop.policy_steps=1", "loop.eval_prompts=4",
            "loop.eval_risky_prompts=2", "loop.showcase_prompts=2", "loop.reward_epochs=1",
            "loop.reward_ensemble=2", "loop.max_new_tokens=8", "ppo.max_new_tokens=8", "ppo.batch_size=8",
            "ppo.mini_batch_size=8", "loop.web_poll_seconds=0.1", "run.device=cpu",
            "loop.web_timeout_seconds=120"]  # fmt: skip
    try:
        out = rlhf(capsys, "loop", "--out", "runs/mine", "--labellers", "web", "--db", DB,
                   # no shell expands the ~ after "key=": rlhf does
                   "--set", "loop.policy=~/models/my-lm", "--set", "reward.model=~/models/my-lm",
                   "--set", "loop.prompts=prompts.jsonl", "--set", "loop.labels_per_round=300",
                   "--set", "loop.web_timeout_seconds=86400", "--set", "loop.overlap_labellers=2",
                   *[a for s in tiny for a in ("--set", s)])  # fmt: skip
    finally:
        done.set()
        worker.join(timeout=30)
    assert not errors, errors
    # 10 tasks, one of them (10% overlap) for both people: 11 labels, every one of them in the round
    assert "waiting for 11 labels on 10 of 10 tasks" in out and "each of admin, alice" in out
    assert sum(given.values()) == 11 and min(given.values()) > 0, given
    labels = read_jsonl("runs/mine/round_01/labels.jsonl")
    assert len(labels) == 11 and {r["labeller_id"] for r in labels} == set(tokens)
    trained = json.loads(Path("runs/mine/round_01/reward_model/reward_config.json").read_text())[
        "training_pairs"
    ]
    assert set(trained) == {"helpful", "harmless"} and min(trained.values()) > 0  # risky prompts ask harmless
    assert "report: runs/mine/report.html" in out and Path("runs/mine/report.html").is_file()
