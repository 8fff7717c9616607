"""Reward functions as users write them: a module in the working directory, the (prompts, responses)
convention and TRL's keyword convention (`completions`), and one-line refusals of anything else."""

from __future__ import annotations

import sys

import pytest
import torch

from rlhf.errors import UserError
from rlhf.rewards import load_reward_source

PROMPTS = ["User: hi\nAssistant:", "User: tea?\nAssistant:"]
RESPONSES = ["Hello there.", "A drink."]

MODULE = """
def positional(prompts, responses):
    return [len(p) + len(r) for p, r in zip(prompts, responses)]

def trl_completions(completions, **kwargs):
    return [float(len(c)) for c in completions]

def trl_both(prompts, completions, **kwargs):
    return [len(p) - len(c) for p, c in zip(prompts, completions)]

def trl_keywords_only(**kwargs):
    return [len(c) * 10 for c in kwargs["completions"]]

def trl_no_kwargs(completions):
    return [1.0 for _ in completions]

def needs_solution(completions, solution, **kwargs):
    return [0.0 for _ in completions]

def one_list(texts):
    return [0.0 for _ in texts]

async def trl_async(prompts, completions, **kwargs):
    return [float(len(c)) + 0.5 for c in completions]
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """my_rewards.py in a fresh working directory that is not on sys.path, as for `rlhf` run from a shell."""
    (tmp_path / "my_rewards.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    yield tmp_path
    sys.modules.pop("my_rewards", None)


@pytest.mark.parametrize(
    "name,expected",
    [
        # "User: hi\nAssistant:" is 19 characters, "User: tea?\nAssistant:" 21; the responses 12 and 8
        ("positional", [19 + 12, 21 + 8]),
        ("trl_completions", [12.0, 8.0]),
        ("trl_both", [19 - 12, 21 - 8]),
        ("trl_keywords_only", [120, 80]),
        ("trl_no_kwargs", [1.0, 1.0]),
        ("trl_async", [12.5, 8.5]),  # before: "returned coroutine", after the models had loaded
    ],
)
def test_a_module_in_the_working_directory_called_by_its_signature(user_module, name, expected):
    # before: "No module named 'my_rewards'"; and TRL's fn(completions, **kwargs) got the prompts as a
    # positional argument (TypeError, a traceback)
    source = load_reward_source(f"my_rewards:{name}")
    torch.testing.assert_close(source(PROMPTS, RESPONSES), torch.tensor(expected, dtype=torch.float32))


def test_a_working_directory_module_does_not_shadow_installed_packages(user_module):
    (user_module / "json.py").write_text("raise RuntimeError('shadowed')\n")
    load_reward_source("my_rewards:positional")
    sys.modules.pop("json", None)
    import json  # noqa: F401 - the standard library's, found before the working directory

    assert str(user_module) == sys.path[-1]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("my_rewards:needs_solution", "needs_solution(completions, solution, **kwargs): rlhf passes only "
         "prompts and completions; accepted signatures: fn(prompts, responses), or TRL's"),
        ("my_rewards:one_list", "one_list(texts); accepted signatures: fn(prompts, responses)"),
        ("my_rewards:missing", "module 'my_rewards' has no 'missing'"),
        ("no_such_rewards:fn", "no module 'no_such_rewards' in the working directory"),
        ("my_rewards.py:positional", "give the module name without .py, e.g. my_rewards:positional"),
    ],
)  # fmt: skip
def test_what_cannot_be_called_is_one_line(user_module, spec, message):
    with pytest.raises(UserError) as info:
        load_reward_source(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_import_inside_the_users_module_is_named(user_module):
    (user_module / "broken_rewards.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(UserError, match="cannot be imported: No module named 'not_installed_anywhere'"):
        load_reward_source("broken_rewards:fn")


def test_cli_ppo_with_a_trl_reward_function_from_the_working_directory(user_module, tiny_lm_dir, capsys):
    from rlhf.cli import main

    code = main(["ppo", "train", "--policy", str(tiny_lm_dir), "--reward", "my_rewards:trl_completions",
                 "--out", str(user_module / "p"), "--set", "ppo.steps=1", "--set", "ppo.batch_size=4",
                 "--set", "ppo.mini_batch_size=4", "--set", "ppo.max_new_tokens=4", "--set", "run.progress=false",
                 "--set", "run.device=cpu", "--set", "run.tensorboard=false"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (user_module / "p" / "config.json").is_file()


def test_a_reward_function_that_cannot_be_called_stops_ppo_before_any_model_loads(user_module, capsys):
    from rlhf.cli import main

    # the policy does not exist: had PPO loaded it first, the error would be about the model
    for spec, message in (("my_rewards:one_list", "one_list(texts); accepted signatures"),
                          ("my_rewards", "neither a reward-model directory nor module:function")):  # fmt: skip
        for option in ("--reward", "--set"):
            args = (
                [option, spec]
                if option == "--reward"
                else ["--reward", "my_rewards:positional", "--set", f"ppo.cost={spec}"]
            )
            assert main(["ppo", "train", "--policy", str(user_module / "no_model"), *args, "--out", "p"]) != 0
            err = capsys.readouterr().err
            assert message in err and "no_model" not in err, err


def raises(prompts, responses):
    raise ValueError("bad input\nsecond line")


def test_a_reward_function_that_raises_is_one_line_naming_it():
    from rlhf.rewards import load_reward_source

    score = load_reward_source("tests.test_rewards:raises")
    with pytest.raises(UserError) as error:
        score(["p"], ["r"])
    assert str(error.value) == (
        "reward function tests.test_rewards:raises raised ValueError: bad input (add --debug for the traceback)"
    )
    assert isinstance(error.value.__cause__, ValueError)  # --debug re-raises with the user's traceback
    # a TRL conversational reward function reads c[0]["content"]: on a string that is a TypeError
    score = load_reward_source("tests.test_rewards:reads_messages")
    with pytest.raises(UserError, match=r"raised TypeError: string indices must be integers.*; rlhf passes "
                       r"prompts and completions as strings \(add --debug"):  # fmt: skip
        score(["p"], ["r"])


def reads_messages(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]
