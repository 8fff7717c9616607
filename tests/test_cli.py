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
