"""The world's gold functions as batch reward functions (`--reward rlhf.world.rewards:helpfulness`).

For ablations and tests only: training on the hidden gold removes what RLHF is about (learning it from
feedback), but shows what the policy could reach.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf.world import gold


def helpfulness(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [gold.helpfulness(p, r) for p, r in zip(prompts, responses, strict=True)]


def harm(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [gold.harm(p, r) for p, r in zip(prompts, responses, strict=True)]


def utility(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [gold.utility(p, r) for p, r in zip(prompts, responses, strict=True)]
