"""The CLI contract: --help everywhere, config show, and user mistakes as one line with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from rlhf.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_command_groups(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for group in ("config", "world", "model", "reward", "ppo", "bench"):
        assert group in out


@pytest.mark.parametrize(
    "command",
    [
        ["config"],
        ["config", "show"],
        ["world"],
        ["world", "build"],
        ["world", "sample"],
        ["world", "panel"],
        ["world", "export"],
        ["model", "info"],
        ["model", "check"],
        ["reward", "train"],
        ["reward", "eval"],
        ["reward", "score"],
        ["reward", "normalize"],
        ["ppo", "train"],
        ["bench", "reward"],
    ],
)
def test_every_command_has_help(capsys, command):
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0 and "Usage" in out


def test_config_show_resolves_overrides(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("world:\n  steps: 10\n")
    code, out, _ = run_cli(
        capsys, "config", "show", "--config", str(path), "--set", "run.seed=5", "--set", "world.lr=0.01"
    )
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["world"]["steps"] == 10 and shown["run"]["seed"] == 5 and shown["world"]["lr"] == 0.01
    assert "panel" in shown


def test_config_show_keys_lists_help(capsys):
    code, out, _ = run_cli(capsys, "config", "show", "--keys")
    assert code == 0 and "world.steps" in out


def test_bad_config_key(capsys):
    code, _, err = run_cli(capsys, "config", "show", "--set", "world.stepz=3")
    assert_one_line_error(code, err, "unknown config key 'world.stepz'", "did you mean 'world.steps'")


def test_bad_config_type(capsys):
    code, _, err = run_cli(capsys, "config", "show", "--set", "world.steps=many")
    assert_one_line_error(code, err, "'world.steps'", "expects int", "'many'")


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "config", "show", "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error(code, err, "nope.yaml does not exist")


def test_missing_model_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "model", "info", str(tmp_path / "missing-model"))
    assert_one_line_error(code, err, "missing-model does not exist")


def test_world_sample_missing_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "world", "sample", "--model", str(tmp_path / "gone"))
    assert_one_line_error(code, err, "gone does not exist")


def test_model_info_prints_loaded_model(capsys, tiny_lm_dir):
    code, out, _ = run_cli(capsys, "model", "info", str(tiny_lm_dir), "--device", "cpu")
    assert code == 0 and "LlamaForCausalLM" in out and "float32" in out


def test_debug_shows_traceback(tmp_path):
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "--debug", "model", "info", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr


def test_installed_entry_point_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "config", "show", "--set", "run.seed=x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "'run.seed'" in result.stderr


def test_unknown_option_and_bad_value_are_usage_errors(capsys):
    code, _, err = run_cli(capsys, "world", "sample", "--bogus")
    assert code == 2 and "No such option" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "world", "sample", "--n", "many")
    assert code == 2 and "--n" in err and "Traceback" not in err


def test_version(capsys):
    from rlhf import __version__

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"rlhf {__version__}"


def test_unwritable_output_is_one_line(capsys, tmp_path):
    # A path under a regular file cannot be created, whoever runs the test (root included).
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, _, err = run_cli(
        capsys, "world", "export", "prompts", "--n", "3", "--out", str(blocker / "sub" / "p.jsonl")
    )
    assert_one_line_error(code, err, "rlhf: error:", "blocker")


def test_world_build_out_is_a_file(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, _, err = run_cli(capsys, "world", "build", "--out", str(target))
    assert_one_line_error(code, err, "is a file")


def test_root_flags_take_no_value_in_help(capsys):
    code, out, _ = run_cli(capsys, "--help")
    lines = {
        line.split()[1]: line
        for line in out.splitlines()
        if line.split()[1:2] in (["--debug"], ["--version"])
    }
    assert code == 0 and set(lines) == {"--debug", "--version"}
    assert all("<bool>" not in line for line in lines.values()), lines


@pytest.mark.parametrize(
    "command", [["reward", "score"], ["feedback", "reliability"], ["label", "serve"], ["loop"], ["demo"]]
)
def test_no_flag_shows_a_value_in_help(capsys, command):
    # every flag, -h/--help included, showed `<bool>` as if it took a value; options with values keep theirs
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0 and "<bool>" not in out, out
    assert "--help" in out and ("<str>" in out or "<path>" in out or "<int>" in out), out


@pytest.mark.parametrize(
    "key,ours",
    [
        ("reward.learning_rate", "reward.lr"),
        ("dpo.per_device_train_batch_size", "dpo.batch_size"),
        ("reward.gradient_accumulation_steps", "reward.grad_accum"),
        ("dpo.num_train_epochs", "dpo.epochs"),
        ("ppo.beta", "ppo.kl_coef"),  # GRPO's beta is the KL coefficient
        ("ppo.num_generations", "ppo.samples_per_prompt"),
        ("reward.seed", "run.seed"),
    ],
)
def test_trl_key_names_suggest_ours(capsys, key, ours):
    code, _, err = run_cli(capsys, "config", "show", "--set", f"{key}=1")
    assert_one_line_error(
        code, err, f"unknown config key '{key}'", f"did you mean '{ours}' (TRL's {key.split('.')[1]})?"
    )


def test_ppo_summary_from_the_main_process_only_and_negative_kl_noted(capsys, monkeypatch, tmp_path):
    import rlhf.algorithms.ppo
    from rlhf.algorithms.ppo import PPOResult

    history = [
        {"objective/scores": 0.1, "objective/kl": 0.0},
        {"objective/scores": 0.5, "objective/kl": -0.02},
    ]
    results = {}
    monkeypatch.setattr(rlhf.algorithms.ppo, "train", lambda *a, **kw: results["next"])
    args = ("ppo", "train", "--out", str(tmp_path), "--set", "ppo.steps=2")
    results["next"] = PPOResult(tmp_path, history, main_process=False)  # another process of 2: silent
    assert run_cli(capsys, *args)[:2] == (0, "")
    results["next"] = PPOResult(tmp_path, history)
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and out.count("policy saved to") == 1
    kl_line = next(line for line in out.splitlines() if line.startswith("objective/kl"))
    assert kl_line.startswith("objective/kl: 0.000 (first iteration) -> -0.020 (last) (a sampled estimate")
    assert "negative value means about 0 plus sampling noise" in kl_line
    assert "(a sampled" not in next(line for line in out.splitlines() if line.startswith("objective/scores"))


def test_kl_note_only_for_negative_estimates(capsys):
    from rlhf.cli import _print_metrics
    from rlhf.evaluation.kl import kl_note

    assert kl_note(0.0) == "" and kl_note(1.7) == "" and kl_note(float("nan")) == ""
    assert "about 0 plus sampling noise" in kl_note(-0.01)
    _print_metrics({"win_rate": 0.5, "kl_to_baseline": -0.01})  # as `rlhf eval` prints its figures
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("kl_to_baseline < 0 (a sampled estimate")
    _print_metrics({"win_rate": 0.5, "kl_to_baseline": 0.2})
    assert "sampled estimate" not in capsys.readouterr().out
    from rlhf.evaluation.policy import describe_eval  # the loop's line per round

    assert describe_eval({"proxy_reward": 0.5, "kl": 0.25}) == "proxy reward 0.500, KL 0.250"
    assert describe_eval({"kl": -0.004}).startswith("KL -0.004 (a sampled estimate: KL itself is >= 0")
