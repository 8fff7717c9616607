"""The closed loop on the small world: rounds end to end, resumption after a crash mid-round, people as
labellers (the loop waits for their labels), DPO and ILQL as the policy update, the report and the demo."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from rlhf.errors import UserError

TINY = [
    "loop.rounds=2", "loop.labels_per_round=40", "loop.pool_per_label=2", "loop.policy_steps=2",
    "loop.eval_prompts=24", "loop.eval_risky_prompts=16", "loop.showcase_prompts=4", "loop.gold_test_pairs=40",
    "loop.reward_epochs=1", "ppo.batch_size=8", "ppo.mini_batch_size=8", "ppo.n_world_prompts=64",
    "dpo.batch_size=8", "ilql.batch_size=16", "frontier.harm_weights=[0.0,2.0]", "frontier.steps=2",
]  # fmt: skip


def tiny_root(world_dir: Path, *more: str):
    from rlhf.config_root import load_root_config

    return load_root_config(None, [*TINY, f"loop.policy={world_dir}", f"reward.model={world_dir}", *more])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(small_world, tmp_path_factory):
    """A 2-round PPO loop with the Safe RLHF constraint, run once for the tests that read it."""
    from rlhf.loop import run_loop

    _, world_dir = small_world
    out = tmp_path_factory.mktemp("loop") / "run"
    result = run_loop(tiny_root(world_dir), out, show_progress=False, log=lambda *_: None)
    return out, result


def test_loop_rounds_record_labels_reward_models_and_evaluations(finished_run):
    out, result = finished_run
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    # 40 comparisons a round, 10% of them answered by 3 labellers: 4 * 2 extra labels (ties are labels too)
    assert [r["labels_total"] for r in result.rounds] == [0, 48, 96]
    for k in (1, 2):
        record = result.rounds[k]
        labels = [
            json.loads(line) for line in (out / f"round_0{k}" / "labels.jsonl").read_text().splitlines()
        ]
        assert len(labels) == 48
        assert {r["objective"] for r in labels} == {"helpful", "harmless"}
        assert sum(r["objective"] == "harmless" for r in labels) >= 10  # 25% of 40, plus overlap
        assert set(record["reward"]["gold_accuracy"]) == {"helpful", "harmless"}
        assert record["eval"]["kl"] != 0.0 and np.isfinite(record["eval"]["kl"])
        assert "proxy_reward" in record["eval"]
        assert (out / f"round_0{k}" / "policy" / "config.json").is_file()
        assert (out / f"round_0{k}" / "policy" / "value_head.pt").is_file()
    assert result.rounds[1]["acquire"]["acquisition/method"] == "random"  # no reward model yet
    assert result.rounds[2]["acquire"]["acquisition/method"] == "entropy"
    # entropy picks the pairs the last ensemble is least sure of: the batch beats the pool on average
    acquired = result.rounds[2]["acquire"]
    assert acquired["acquisition/score_batch/helpful"] > acquired["acquisition/score_pool/helpful"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1, 2]
    assert "lagrange" in metrics[2] and metrics[2]["lagrange"] >= 0.0
    # the reward model was normalised on the initial policy's samples (stored for PPO's normalised rewards)
    meta = json.loads((out / "round_02" / "reward_model" / "reward_config.json").read_text())
    assert meta["norm_mean"] is not None and len(meta["norm_std"]) == 2


def test_each_round_writes_labeller_quality_and_the_next_reward_model_weighs_by_it(finished_run):
    out, _ = finished_run
    decided = 0
    for k in (1, 2):
        quality = json.loads((out / f"round_0{k}" / "quality.json").read_text())
        labels = [
            json.loads(line) for line in (out / f"round_0{k}" / "labels.jsonl").read_text().splitlines()
        ]
        decided += sum(not r.get("tie") for r in labels)
        assert quality["n_labels"] == decided  # every label so far, ties left out
        assert quality["columns"] == ["asked objective", "other objective", "length"]
        assert not quality["position_bias_fitted"]  # the store's export rows do not say what was shown first
        for row in quality["labellers"]:
            assert {
                "rationality",
                "rationality_sd",
                "weights",
                "judges_by",
                "n_labels",
                "flagged",
                "weight",
            } <= set(row)
            assert sum(row["judges_by"].values()) == pytest.approx(1.0)
    # round 2's reward model trained on every label weighted by its labeller's round-1 quality weight
    weight = {
        r["labeller_id"]: r["weight"]
        for r in json.loads((out / "round_01" / "quality.json").read_text())["labellers"]
    }
    trained = [json.loads(line) for line in (out / "round_02" / "reward_data.jsonl").read_text().splitlines()]
    assert len(trained) == 96
    assert all(r["weight"] == pytest.approx(max(weight.get(r["labeller_id"], 1.0), 0.02)) for r in trained)
    first = [json.loads(line) for line in (out / "round_01" / "reward_data.jsonl").read_text().splitlines()]
    assert all("weight" not in r for r in first)  # round 1: no quality yet, every label weighs 1
    # flagged labellers are marked in the store, where the admin dashboard lists them
    import sqlite3

    flagged = {
        r["labeller_id"]
        for k in (1, 2)
        for r in json.loads((out / f"round_0{k}" / "quality.json").read_text())["labellers"]
        if r["flagged"]
    }
    with sqlite3.connect(out / "feedback.db") as db:
        marked = {name for (name,) in db.execute("select name from labellers where flagged")}
    assert marked == flagged


def test_policy_starts_from_last_round_with_kl_to_the_initial_policy(finished_run):
    out, result = finished_run
    config = (out / "round_02" / "policy" / "rlhf_config.yaml").read_text()
    assert f"policy: {out / 'round_01' / 'policy'}" in config
    assert f"reference: {result.rounds[0]['policy']}" in config
    # the penalty is to the initial policy: round 2 starts away from it (a copy of its own start would
    # give a log-ratio of exactly 0 on the first batch)
    first = json.loads((out / "round_02" / "policy" / "logs" / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["objective/kl"]) > 1e-6


def test_crash_mid_round_keeps_earlier_rounds_and_resume_finishes(small_world, tmp_path, monkeypatch):
    import rlhf.loop as loop

    _, world_dir = small_world
    out = tmp_path / "run"
    root = tiny_root(world_dir)
    real_update = loop.update_policy

    def crash_in_round_2(*args, **kwargs):
        if Path(args[5]).name == "round_02.partial":  # round_path
            raise RuntimeError("simulated crash during round 2's policy update")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(loop, "update_policy", crash_in_round_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.run_loop(root, out, show_progress=False, log=lambda *_: None)
    assert loop.finished_rounds(out) == [0, 1]
    partial = out / "round_02.partial"
    assert (partial / "labels.jsonl").is_file() and (
        partial / "reward_model" / "reward_config.json"
    ).is_file()
    kept = {p: digest(p) for p in (out / "round_01").rglob("*") if p.is_file()}
    labels_before = (partial / "labels.jsonl").read_text()
    store = loop.open_store(root.loop, out)
    tasks_before = store.count_labels()
    store.close()

    with pytest.raises(UserError, match="not empty"):  # a rerun without --resume refuses to overwrite
        loop.run_loop(tiny_root(world_dir), out, show_progress=False)
    monkeypatch.setattr(loop, "update_policy", real_update)
    result = loop.run_loop(tiny_root(world_dir), out, resume=True, show_progress=False, log=lambda *_: None)

    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert {p: digest(p) for p in kept} == kept  # round 1 untouched
    assert not partial.exists()
    assert (out / "round_02" / "labels.jsonl").read_text() == labels_before  # no phase redone
    store = loop.open_store(root.loop, out)
    assert store.count_labels() == tasks_before  # the resumed round pushed and labelled nothing twice
    store.close()


def test_resume_needs_a_run(tmp_path, small_world):
    from rlhf.loop import run_loop

    _, world_dir = small_world
    with pytest.raises(UserError, match="holds no loop run"):
        run_loop(tiny_root(world_dir), tmp_path / "nothing", resume=True, show_progress=False)


def test_bad_loop_settings_are_config_errors(small_world):
    from rlhf.config import ConfigError

    _, world_dir = small_world
    with pytest.raises(ConfigError, match="loop.acquisition"):
        tiny_root(world_dir, "loop.acquisition=psychic")
    with pytest.raises(ConfigError, match="reward_ensemble"):
        tiny_root(world_dir, "loop.reward_ensemble=1")
    with pytest.raises(ConfigError, match="harmless_share"):
        tiny_root(world_dir, "loop.harmless_share=1.5")


def test_web_labellers_the_loop_waits_for_people(small_world, tmp_path):
    """labellers=web: the round's tasks wait in the store until people answer them; here a labeller
    answers through the same store calls the web app makes, from another thread, after a delay."""
    import time

    from rlhf.feedback.queue import answer_task
    from rlhf.feedback.records import StoreSettings
    from rlhf.feedback.store import FeedbackStore
    from rlhf.loop import run_loop
    from rlhf.world.panel import PanelConfig, make_panel

    _, world_dir = small_world
    db = f"sqlite:///{tmp_path / 'people.db'}"
    root = tiny_root(world_dir, "loop.rounds=1", "loop.labellers=web", f"loop.store={db}",
                     "loop.web_poll_seconds=0.2", "loop.overlap_share=0")  # fmt: skip
    person = make_panel(PanelConfig(n_labellers=1, n_spammers=0, n_length_biased=0, n_refusal_preferring=0))
    answered = []
    accounts = FeedbackStore(db, StoreSettings(project="loop"))
    me, _ = accounts.add_labeller("alice", onboarded=True)  # before the loop: it checks who can label
    accounts.close()

    def label_when_tasks_appear() -> None:
        store = FeedbackStore(db, StoreSettings(project="loop"))
        rng = np.random.default_rng(0)
        deadline = time.monotonic() + 120
        while len(answered) < 40 and time.monotonic() < deadline:
            task = store.next_task(me.id)
            if task is None:
                time.sleep(0.1)
                continue
            store.submit_label(me.id, answer_task(task, person.labellers[0], rng))
            answered.append(task.id)
        store.close()

    worker = threading.Thread(target=label_when_tasks_appear)
    worker.start()
    result = run_loop(root, tmp_path / "run", show_progress=False, log=lambda *_: None)
    worker.join()
    assert len(answered) == 40
    assert result.rounds[1]["labels_total"] == 40
    labels = (tmp_path / "run" / "round_01" / "labels.jsonl").read_text().splitlines()
    assert {json.loads(line)["labeller_id"] for line in labels} == {"alice"}


def test_web_labellers_timeout_without_labels_is_a_user_error(small_world, tmp_path):
    from rlhf.feedback.store import FeedbackStore
    from rlhf.loop import run_loop

    _, world_dir = small_world
    db = f"sqlite:///{tmp_path / 'people.db'}"
    accounts = FeedbackStore(db)
    accounts.add_labeller("alice")  # an account who never labels (with none, the loop fails at once)
    accounts.close()
    root = tiny_root(world_dir, "loop.rounds=1", "loop.labellers=web", "loop.web_poll_seconds=0.1",
                     "loop.web_timeout_seconds=0.5", f"loop.store={db}", "loop.overlap_share=0")  # fmt: skip
    with pytest.raises(UserError, match="no labels arrived"):
        run_loop(root, tmp_path / "run", show_progress=False, log=lambda *_: None)


@pytest.mark.parametrize("algorithm", ["dpo", "ilql"])
def test_dpo_and_ilql_as_the_policy_update(small_world, tmp_path, algorithm):
    from rlhf.evaluation.policy import is_ilql_dir
    from rlhf.loop import run_loop

    _, world_dir = small_world
    result = run_loop(tiny_root(world_dir, f"loop.algorithm={algorithm}"), tmp_path / "run", show_progress=False,
                      log=lambda *_: None)  # fmt: skip
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    policy = tmp_path / "run" / "round_02" / "policy"
    assert is_ilql_dir(policy) == (algorithm == "ilql")  # round 2 sampled from round 1's ILQL policy
    assert np.isfinite(result.rounds[2]["eval"]["kl"])


def test_report_has_every_plot_and_table(finished_run):
    from rlhf.evaluation.report import write_report

    out, _ = finished_run
    page = write_report(out)
    text = page.read_text()
    for name in (
        "rewards",
        "overoptimisation",
        "reward_accuracy",
        "kl",
        "frontier",
        "risky_kinds",
        "acquisition",
    ):
        png = out / "plots" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="plots/{name}.png"' in text
    assert "Krippendorff" in text and "labeller-01" in text
    # the labeller table reads the newest quality.json: rationality ± sd, what each judges by, weights
    assert "round 2&#x27;s quality.json" in text or "round 2's quality.json" in text
    assert " ± " in text and "asked objective" in text and "agrees with gold (toy world only)" in text
    assert "Samples before and after" in text and "round 0" in text and "round 2" in text
    assert "mismatch.png" not in text  # our own sampler: no sampler/trainer mismatch to show


def test_report_of_a_directory_without_a_run_is_a_user_error(tmp_path):
    from rlhf.evaluation.report import write_report

    with pytest.raises(UserError, match="no finished round"):
        write_report(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "missing")


def test_pareto_front_by_hand():
    from rlhf.evaluation.report import pareto_front

    # (helpfulness, harmful share): b beats a on both; c is safer but less helpful; d is dominated by b
    points = [(0.2, 0.3), (0.4, 0.2), (0.1, 0.0), (0.3, 0.25)]
    assert pareto_front(points) == [2, 1]  # ordered by harm: c (0.0), then b (0.2)


def test_agreement_with_others_by_hand():
    from rlhf.evaluation.report import _agreement_with_others

    def row(who, chosen, rejected):
        return {
            "prompt": "p",
            "chosen": chosen,
            "rejected": rejected,
            "labeller_id": who,
        }  # noqa: E731

    rows = [row("a", "x", "y"), row("b", "x", "y"), row("c", "y", "x"), row("d", "u", "v")]
    # a: the others (b x, c y) split evenly -> no majority, not counted; likewise b; c: others a, b both x -> 0
    assert _agreement_with_others(rows) == {"c": 0.0}


def test_demo_cli_writes_summary_report_and_prints_figures(small_world, tmp_path, capsys):
    from rlhf.cli import main

    _, world_dir = small_world
    out = tmp_path / "demo"
    sets = [a for s in [*TINY, f"loop.policy={world_dir}", f"reward.model={world_dir}"] for a in ("--set", s)]
    assert main(["demo", "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["gold_helpfulness"]) == {"before", "after"} and set(summary["harmful_share"]) == {
        "before",
        "after",
    }
    assert summary["labels_used"] == 96 and summary["wall_seconds"] > 0 and summary["peak_rss_mb"] > 100
    assert "gold helpfulness" in printed and str(out / "report.html") in printed
    frontier = json.loads((out / "frontier.json").read_text())
    assert [p["name"] for p in frontier] == ["w=0", "w=2"] and any(p["on_frontier"] for p in frontier)
    assert "sweep policies" not in (out / "report.html").read_text()  # legend text lives in the PNG
    # a second demo into the same directory replaces the finished one
    assert main(["demo", "--out", str(out), "--no-frontier", *sets]) == 0
    assert not (out / "frontier.json").exists()


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "runs" / "test-artifacts"


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
def test_report_renders_in_headless_chromium_and_screenshot_is_saved(finished_run):
    """The report's first screen as a reader sees it: every plot loads (naturalWidth > 0), the summary
    cards are there; the screenshot is kept in runs/test-artifacts/report_first_screen.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from rlhf.evaluation.report import write_report

    out, _ = finished_run
    page_path = write_report(out)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report_first_screen.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 7 and all(w > 0 for w in widths)  # every PNG found and decoded
        assert "gold helpfulness" in page.inner_text(".cards")
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_cli_user_mistakes_are_one_line_errors(tmp_path, capsys, finished_run):
    from rlhf.cli import main

    assert main(["report", str(tmp_path / "missing")]) != 0
    assert "not a directory" in capsys.readouterr().err
    assert main(["loop"]) != 0
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["loop", "--out", str(tmp_path / "x"), "--algorithm", "sarsa"]) != 0
    assert "loop.algorithm must be one of ppo, dpo, ilql" in capsys.readouterr().err
    assert (
        main(["frontier", "--reward", str(tmp_path), "--out", str(tmp_path / "f"), "--weights", "1,x"]) != 0
    )
    assert "expected numbers separated by commas" in capsys.readouterr().err
    few = tmp_path / "few.jsonl"
    few.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert main(["loop", "--out", str(tmp_path / "y"), "--set", f"loop.prompts={few}"]) != 0
    assert (
        "2 prompts; at least 8 are needed (a quarter is held out for evaluation)" in capsys.readouterr().err
    )
    assert not (tmp_path / "y").exists()  # checked before anything is written
    assert (
        main(["frontier", "--prompts", str(few), "--reward", str(tmp_path), "--out", str(tmp_path / "f2")])
        != 0
    )
    assert "2 prompts; at least 8 are needed" in capsys.readouterr().err  # it said "the loop needs"
    out, _ = finished_run
    bad = tmp_path / "not_active.json"
    bad.write_text('{"hello": 1}')
    assert main(["report", str(out), "--active-results", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "not an `rlhf bench active` result" in err and "Traceback" not in err


def test_loop_on_a_prompt_file_with_a_plain_transformers_model(tiny_lm_dir, tmp_path):
    """Not the world: a random-weight Llama and its own tokenizer, prompts from a file (some flagged risky),
    labellers who prefer longer answers. No gold anywhere: the loop and the report run on the reward
    model's scores and the KL alone."""
    from rlhf.evaluation.report import write_report
    from rlhf.loop import run_loop

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?", "risky": i % 4 == 0}) + "\n"
                               for i in range(48)))  # fmt: skip
    labellers = "panel.labellers=[{name: long1, objective: length}, {name: long2, objective: length}]"
    root = tiny_root(tiny_lm_dir, f"loop.prompts={prompts}", "loop.eval_prompts=8", "loop.max_new_tokens=12",
                     "ppo.max_new_tokens=12", labellers)  # fmt: skip
    result = run_loop(root, tmp_path / "run", show_progress=False, log=lambda *_: None)
    last = result.rounds[-1]
    assert "gold_helpfulness" not in last["eval"] and "harmful_share" not in last["eval"]
    assert {"proxy_reward", "proxy_harmless", "kl"} <= set(last["eval"])
    assert "gold_accuracy" not in last["reward"]
    labels = [
        json.loads(line) for line in (tmp_path / "run" / "round_01" / "labels.jsonl").read_text().splitlines()
    ]
    harmless_prompts = {r["prompt"] for r in labels if r["objective"] == "harmless"}
    assert harmless_prompts and all(int(p.split()[1][:-1]) % 4 == 0 for p in harmless_prompts)  # flagged only
    held_out = {
        json.loads(line)["prompt"]
        for line in (tmp_path / "run" / "round_00" / "showcase.jsonl").read_text().splitlines()
    }
    assert not held_out & {r["prompt"] for r in labels}  # evaluation prompts never reach the labellers
    trained = tmp_path / "run" / "round_01" / "train_prompts.jsonl"
    trained = {json.loads(line)["prompt"] for line in trained.read_text().splitlines()}
    assert len(trained) == 40 and not held_out & trained  # ... nor PPO: 48 prompts less the 8 held out
    text = write_report(tmp_path / "run").read_text()
    assert 'src="plots/frontier.png"' in text and 'src="plots/risky_kinds.png"' not in text


def test_loop_renders_chat_prompts_with_the_policys_template(family_dir, tmp_path, monkeypatch):
    """A conversational prompt file and a Qwen2-style policy: the loop's prompts are the policy's ChatML,
    as `rlhf ppo train --prompts` renders them (they were the world's `User:/Assistant:` format)."""
    from rlhf import loop

    policy = family_dir("qwen2")
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"what is {i}?"}]}
            for i in range(12)]  # fmt: skip
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = {}

    class Stop(Exception):
        pass

    def capture(cfg, tokenizer=None):
        seen["source"] = real(cfg, tokenizer)
        raise Stop  # the prompts are all this test needs

    real = loop.PromptSource
    monkeypatch.setattr(loop, "PromptSource", capture)
    with pytest.raises(Stop):
        loop.run_loop(tiny_root(policy, f"loop.prompts={prompts}"), tmp_path / "run", show_progress=False)
    source = seen["source"]
    drawn = source.file_prompts + source.eval_general
    assert len(drawn) == 12
    assert all(p.startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n") for p in drawn)
    assert all(p.endswith("<|im_start|>assistant\n") for p in drawn)
