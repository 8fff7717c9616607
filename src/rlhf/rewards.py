"""Reward sources behind one interface: `source(prompts, responses) -> scores (B,)`.

A spec is one of:
- a reward-model directory (`rlhf reward train` output): the heads combined with `weights`
  (e.g. {"helpful": 1.0, "harmless": 0.5}; default: the first head), normalised on request;
- `module:function`: any Python function taking (prompts, responses) lists and returning one number per
  response, e.g. `rlhf.world.rewards:helpfulness` (the bundled world's hidden gold, for ablations).
"""

from __future__ import annotations

import importlib
import math
import numbers
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
) -> RewardFn:
    """The reward source `spec` (see the module docstring). `policy_tokenizer`, the tokenizer that rendered
    the prompts, lets a reward model warn when its chat template is not the one the prompts were rendered
    with: it then reads the policy's chat markup as plain text (docs/sequences.md)."""
    if not spec:
        raise UserError("no reward given: pass a reward-model directory or module:function")
    if Path(spec).expanduser().is_dir():
        return _reward_model_source(spec, weights or {}, normalize, device, max_length, policy_tokenizer)
    if ":" in spec:
        return _function_source(spec)
    raise UserError(f"reward {spec!r} is neither a reward-model directory nor module:function")


def _reward_model_source(
    path: str, weights: dict[str, float], normalize: bool, device: str, max_length: int, policy_tokenizer: Any
) -> RewardFn:
    from rlhf.reward_model import load_reward_model, score_texts
    from rlhf.sequences import is_chat_prompt, scored_text

    model, tokenizer = load_reward_model(path, device=device)
    unknown = sorted(set(weights) - set(model.objectives))
    if unknown:
        raise UserError(
            f"reward weights name heads {unknown} that {path} does not have ({', '.join(model.objectives)})"
        )
    vector = (
        torch.tensor([weights.get(name, 0.0) for name in model.objectives])
        if weights
        else torch.eye(len(model.objectives))[0]
    )

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
        return score_texts(model, tokenizer, texts, max_length=max_length, normalize=normalize).mean @ vector

    return score


def _function_source(spec: str) -> RewardFn:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"reward function {spec!r} cannot be imported: {exc}") from exc

    def score(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return check_scores(fn(list(prompts), list(responses)), len(responses), f"reward function {spec}")

    return score


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
