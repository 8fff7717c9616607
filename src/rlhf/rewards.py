"""Reward sources behind one interface: `source(prompts, responses) -> scores (B,)`.

A spec is one of:
- a reward-model directory (`rlhf reward train` output): the heads combined with `weights`
  (e.g. {"helpful": 1.0, "harmless": 0.5}; default: the first head), normalised on request;
- `module:function`: a Python function returning one number per response, called as
  `fn(prompts, responses)` with two lists, or TRL's way, `fn(prompts=..., completions=...)` with keyword
  arguments, when it names a `completions` parameter (`fn(completions, **kwargs)`); e.g.
  `rlhf.world.rewards:helpfulness` (the bundled world's hidden gold, for ablations). The module is
  imported from the working directory first, as `python -m` would, then from the installed packages.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.errors import UserError

RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def load_reward_source(
    spec: str,
    weights: dict[str, float] | None = None,
    normalize: bool = False,
    device: str = "auto",
    max_length: int = 512,
    policy_tokenizer: Any = None,
    setting: str = "reward weights",
) -> RewardFn:
    """The reward source `spec` (see the module docstring). `policy_tokenizer`, the tokenizer that rendered
    the prompts, lets a reward model warn when its chat template is not the one the prompts were rendered
    with: it then reads the policy's chat markup as plain text (docs/sequences.md). `setting` names the
    weights in error messages (e.g. "ppo.cost_weights")."""
    if not spec:
        raise UserError("no reward given: pass a reward-model directory or module:function")
    if Path(spec).expanduser().is_dir():
        return _reward_model_source(
            spec, weights or {}, normalize, device, max_length, policy_tokenizer, setting
        )
    if ":" in spec:
        return _function_source(spec)
    raise UserError(f"reward {spec!r} is neither a reward-model directory nor module:function")


def _reward_model_source(
    path: str,
    weights: dict[str, float],
    normalize: bool,
    device: str,
    max_length: int,
    policy_tokenizer: Any,
    setting: str = "reward weights",
) -> RewardFn:
    from rlhf.reward_model import check_heads_trained, load_reward_model, score_texts
    from rlhf.sequences import is_chat_prompt, scored_text

    model, tokenizer = load_reward_model(path, device=device)
    unknown = sorted(set(weights) - set(model.objectives))
    if unknown:
        raise UserError(
            f"{setting} name heads {unknown} that {path} does not have ({', '.join(model.objectives)})"
        )
    vector = (
        torch.tensor([weights.get(name, 0.0) for name in model.objectives])
        if weights
        else torch.eye(len(model.objectives))[0]
    )
    if not weights and len(model.objectives) > 1 and setting != "reward weights":
        warnings.warn(
            f"{path} has heads {', '.join(model.objectives)}; {setting} not given, so the score is the first "
            f"head, {model.objectives[0]!r}",
            stacklevel=2,
        )
    check_heads_trained(model.meta, dict(zip(model.objectives, vector.tolist(), strict=True)), path)

    warned = []

    def score(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        if policy_tokenizer is not None and not warned:
            foreign = [
                p for p in prompts if is_chat_prompt(policy_tokenizer, p) and not is_chat_prompt(tokenizer, p)
            ]
            if foreign:
                warned.append(True)
                warnings.warn(
                    f"the prompts are rendered with the policy's chat template, which is not the chat template "
                    f"of the reward model {path}: it reads them as plain text, not as the conversations it was "
                    "trained on (use a reward model with the policy's template)",
                    stacklevel=2,
                )
        texts = [scored_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
        # K responses to one prompt (RLOO, GRPO): the reward model runs the prompt once for all K
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(i)
        scores = score_texts(
            model, tokenizer, texts, max_length=max_length, normalize=normalize, groups=list(groups.values())
        )
        return scores.mean @ vector

    score.model = model  # type: ignore[attr-defined]  # for a trainer to shard it (PPO under FSDP2)
    return score


def check_reward_spec(spec: str) -> None:
    """Fail before any model loads: a reward function that cannot be imported or called, or a spec that
    is neither a directory nor module:function, is the UserError `load_reward_source` would raise later."""
    if not spec or Path(spec).expanduser().is_dir():
        return
    if ":" not in spec:
        raise UserError(f"reward {spec!r} is neither a reward-model directory nor module:function")
    reward_call(import_function(spec), spec)


def _function_source(spec: str) -> RewardFn:
    fn = import_function(spec)
    call = reward_call(fn, spec)

    def score(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        try:
            returned = call(list(prompts), list(responses))
        except Exception as exc:  # noqa: BLE001 - the user's code failed: one line, --debug for the traceback
            first = str(exc).splitlines()[0] if str(exc) else ""
            # TRL passes message lists for conversational data; rlhf passes strings (docs/ppo.md)
            strings = "; rlhf passes prompts and completions as strings" if isinstance(exc, TypeError) else ""
            raise UserError(
                f"reward function {spec} raised {type(exc).__name__}: {first}{strings} (add --debug for the "
                "traceback)"
            ) from exc
        return check_scores(returned, len(responses), f"reward function {spec}")

    return score


def import_function(spec: str) -> Callable:
    """The function `module:function` names, its module imported with the working directory first on
    sys.path, as `python -m` puts it: `--reward my_rewards:fn` finds ./my_rewards.py as the user expects."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"reward function {spec!r}: expected module:function, e.g. my_rewards:score")
    if module_name.endswith(".py"):
        raise UserError(
            f"reward function {spec!r}: give the module name without .py, e.g. {module_name[:-3].replace('/', '.')}:{attr}"
        )
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):  # not a module it imports
            raise UserError(
                f"reward function {spec!r} cannot be imported: no module {exc.name!r} in the working directory {cwd} "
                "or the installed packages (run from the directory holding it, or install it)"
            ) from exc
        raise UserError(f"reward function {spec!r} cannot be imported: {exc}") from exc
    except ImportError as exc:
        raise UserError(f"reward function {spec!r} cannot be imported: {exc}") from exc
    finally:
        if added:  # at the end from now on: imports inside the function still find its siblings, and
            sys.path.remove(cwd)  # the working directory's files do not shadow installed packages
            sys.path.append(cwd)
    fn = getattr(module, attr, None)
    if fn is None:
        raise UserError(
            f"reward function {spec!r} cannot be imported: module {module_name!r} has no {attr!r}"
        )
    if not callable(fn):
        raise UserError(f"reward function {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


SIGNATURES = "fn(prompts, responses), or TRL's fn(completions, **kwargs) / fn(prompts, completions, **kwargs)"


def reward_call(fn: Callable, spec: str) -> Callable[[list[str], list[str]], Any]:
    """How to call a user's reward function with (prompts, responses), judged from its signature:
    TRL's keyword call `fn(prompts=..., completions=...)` when it has a `completions` parameter (passing
    `prompts` when it names it or takes **kwargs), else the positional call `fn(prompts, responses)`.
    A signature that fits neither is a UserError naming the accepted ones. An `async def` function is
    run to completion on each call (TRL accepts async reward functions too)."""
    if inspect.iscoroutinefunction(fn):
        call = reward_call(_awaited(fn), spec)
        return call
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or extension function: no signature to read
        return lambda prompts, responses: fn(prompts, responses)
    params = signature.parameters.values()
    names = {p.name for p in params}
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    required = [
        p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    shown = f"{getattr(fn, '__name__', 'fn')}{signature}"
    if "completions" in names:  # TRL: reward_func(prompts=prompts, completions=completions, **kwargs)
        unknown = [n for n in required if n not in ("prompts", "completions")]
        positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
        if unknown or positional_only:
            raise UserError(
                f"reward function {spec} is {shown}: rlhf passes only prompts and completions; "
                f"accepted signatures: {SIGNATURES}"
            )
        pass_prompts = "prompts" in names or var_keyword
        return lambda prompts, responses: (
            fn(prompts=prompts, completions=responses) if pass_prompts else fn(completions=responses)
        )
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_two = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    if takes_two and len(required) <= 2:
        return lambda prompts, responses: fn(prompts, responses)
    if not positional and var_keyword:  # fn(**kwargs): TRL's keywords
        return lambda prompts, responses: fn(prompts=prompts, completions=responses)
    raise UserError(f"reward function {spec} is {shown}; accepted signatures: {SIGNATURES}")


def _awaited(fn: Callable) -> Callable:
    """`fn` (an async function) as a plain one with its signature: each call runs the coroutine."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return run


def check_scores(returned: Any, n: int, what: str) -> torch.Tensor:
    """`returned` as a float tensor (n,), or UserError naming `what` and the first bad entry: not a
    sequence or tensor, the wrong count, an entry that is not a number (None, text, a list), NaN or inf."""
    if isinstance(returned, torch.Tensor | np.ndarray):
        returned = returned.tolist()
    if not isinstance(returned, Sequence) or isinstance(returned, str | bytes):
        raise UserError(f"{what} returned {type(returned).__name__}; expected a list of {n} numbers")
    if len(returned) != n:
        raise UserError(f"{what} returned {len(returned)} scores for {n} responses")
    values = []
    for i, value in enumerate(returned):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif isinstance(value, np.ndarray | np.generic) and value.size == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise UserError(f"{what} returned {type(value).__name__} for response {i}; expected a number")
        if not math.isfinite(value):
            raise UserError(f"{what} returned {value} for response {i}; expected a finite number")
        values.append(float(value))
    return torch.tensor(values, dtype=torch.float32)
