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
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rlhf.errors import UserError

RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def load_reward_source(
    spec: str,
    weights: dict[str, float] | None = None,
    normalize: bool = False,
    device: str = "auto",
    max_length: int = 512,
) -> RewardFn:
    if not spec:
        raise UserError("no reward given: pass a reward-model directory or module:function")
    if Path(spec).expanduser().is_dir():
        return _reward_model_source(spec, weights or {}, normalize, device, max_length)
    if ":" in spec:
        return _function_source(spec)
    raise UserError(f"reward {spec!r} is neither a reward-model directory nor module:function")


def _reward_model_source(
    path: str, weights: dict[str, float], normalize: bool, device: str, max_length: int
) -> RewardFn:
    from rlhf.data import join_prompt_response
    from rlhf.reward_model import load_reward_model, score_texts

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

    def score(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [join_prompt_response(p, r) for p, r in zip(prompts, responses, strict=True)]
        return score_texts(model, tokenizer, texts, max_length=max_length, normalize=normalize).mean @ vector

    return score


def _function_source(spec: str) -> RewardFn:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"reward function {spec!r} cannot be imported: {exc}") from exc

    def score(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        values = torch.as_tensor([float(v) for v in fn(list(prompts), list(responses))], dtype=torch.float32)
        if values.shape != (len(responses),):
            raise UserError(
                f"reward function {spec} returned {values.shape[0]} scores for {len(responses)} responses"
            )
        if not all(math.isfinite(v) for v in values.tolist()):
            raise UserError(f"reward function {spec} returned NaN or inf")
        return values

    return score
