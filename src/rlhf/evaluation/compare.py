"""Head-to-head evaluation of a policy against a baseline on the same prompts: win rate, mean scores,
KL to the baseline, and in the bundled world the gold scores and response-kind shares."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def win_rate(
    policy_scores: Any, baseline_scores: Any, tie_tolerance: float = 1e-9
) -> tuple[float, dict[str, float]]:
    """Share of prompts where the policy's response scores higher than the baseline's, ties counting
    half (the usual convention of pairwise win rates); arrays (N,) -> (rate, stats)."""
    a, b = np.asarray(policy_scores, dtype=float), np.asarray(baseline_scores, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"win_rate needs two equal, non-empty 1-D score arrays, got {a.shape} and {b.shape}")
    wins, ties = float(np.mean(a > b + tie_tolerance)), float(np.mean(np.abs(a - b) <= tie_tolerance))
    rate = wins + 0.5 * ties
    return rate, {"win_rate": rate, "wins": wins, "ties": ties, "losses": 1.0 - wins - ties}


def evaluate(
    cfg: Any,
    policy: str,
    baseline: str = "world",
    judge: str = "gold",
    prompts: list[str] | None = None,
    n: int = 256,
    seed: int = 0,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Sample `policy` and `baseline` on the same prompts (world prompts by default) and compare them.

    `judge`: 'gold' (the world's hidden utility; world prompts only) or any reward source (a reward-model
    directory or module:function), which is how a real evaluation without gold works."""
    from rlhf.errors import UserError
    from rlhf.evaluation.kl import sampled_kl
    from rlhf.rollout import SamplingConfig, sample
    from rlhf.world import corpus, gold
    from rlhf.world.report import load_world_lm

    prompts = prompts if prompts is not None else corpus.sample_prompts(n, seed)
    world = all(corpus.parse_request(p) is not None for p in prompts)
    if judge == "gold" and not world:
        raise UserError("--judge gold needs the bundled world's prompts; give a reward model as the judge")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0)
    policy_lm, tokenizer = load_world_lm(cfg, policy)
    baseline_lm, baseline_tokenizer = load_world_lm(cfg, baseline)
    ours = sample(policy_lm, tokenizer, prompts, sampling, seed=seed)
    theirs = sample(baseline_lm, baseline_tokenizer, prompts, sampling, seed=seed)
    if judge == "gold":
        score = lambda ps, rs: [gold.utility(p, r) for p, r in zip(ps, rs, strict=True)]  # noqa: E731
    else:
        from rlhf.rewards import load_reward_source

        source = load_reward_source(judge, device=cfg.run.device, policy_tokenizer=tokenizer)
        score = lambda ps, rs: source(ps, rs).tolist()  # noqa: E731
    ours_scores, theirs_scores = score(prompts, ours.responses), score(prompts, theirs.responses)
    _, stats = win_rate(ours_scores, theirs_scores)
    result: dict[str, Any] = {
        "policy": str(policy),
        "baseline": str(baseline),
        "judge": judge,
        "prompts": len(prompts),
        **stats,
        "policy_mean_score": float(np.mean(ours_scores)),
        "baseline_mean_score": float(np.mean(theirs_scores)),
        "kl_to_baseline": float(np.mean(sampled_kl(policy_lm, baseline_lm, tokenizer, ours))),
    }
    if world:
        for name, samples in (("policy", ours), ("baseline", theirs)):
            kinds = Counter(gold.response_kind(p, r) for p, r in zip(prompts, samples.responses, strict=True))
            result[f"{name}_gold_helpfulness"] = float(
                np.mean([gold.helpfulness(p, r) for p, r in zip(prompts, samples.responses, strict=True)])
            )
            result[f"{name}_kind_shares"] = {k: v / len(prompts) for k, v in kinds.most_common()}
    return result
