"""Head-to-head evaluation of a policy against a baseline on the same prompts: win rate, mean scores,
KL to the baseline, and in the bundled world the gold scores and response-kind shares.

The baseline defaults to the policy's own initial model, read from the `rlhf_config.yaml` its training
command saved beside it; a baseline whose tokenizer is not the policy's is refused, since the KL compares
the two models token by token.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
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


# Where each training command records the model a policy started from (and was held close to).
INITIAL_MODEL_KEYS = (("ppo", "reference"), ("ppo", "policy"), ("dpo", "model"), ("ilql", "model"))


def initial_model(policy: str | Path) -> tuple[str, str] | None:
    """(the initial model, where that was read) of a policy directory saved by `rlhf ppo train`, `dpo
    train`, `ilql train` or the loop; None when it has no `rlhf_config.yaml` naming one. PPO's
    `reference`, when set (iterative rounds), is the model the whole run was held close to."""
    import yaml

    path = Path(policy).expanduser() / "rlhf_config.yaml"
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    for section, key in INITIAL_MODEL_KEYS:
        value = (saved or {}).get(section, {}) if isinstance(saved, dict) else {}
        if isinstance(value, dict) and isinstance(value.get(key), str) and value[key]:
            return value[key], f"{section}.{key} in {path}"
    return None


def resolve_baseline(policy: str, baseline: str | None) -> tuple[str, str]:
    """(the baseline to compare `policy` with, why that one): `baseline` when given, else the policy's
    initial model (`initial_model`); the world model for the world model itself. A policy with no known
    initial model is a UserError asking for --baseline: guessing one would compare unrelated models."""
    from rlhf.errors import UserError

    if baseline:
        return baseline, "--baseline"
    found = initial_model(policy)
    if found is not None:
        return found[0], f"the policy's initial model, {found[1]}"
    if str(policy) == "world":
        return "world", "the world model itself"
    raise UserError(
        f"{policy} names no initial model (no rlhf_config.yaml of an rlhf training command beside it): give "
        "--baseline MODEL, a model with the policy's tokenizer ('world' for the bundled world's)"
    )


def _world_tokenizer(tokenizer: Any) -> bool:
    """Whether `tokenizer` is a world model's: `rlhf world build` gives every world tokenizer (whatever
    its size) the world's chat template, and the models trained from one keep it."""
    from rlhf.world.build import CHAT_TEMPLATE

    return getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE


def evaluate(
    cfg: Any,
    policy: str,
    baseline: str | None = None,
    judge: str = "gold",
    prompts: list[str] | None = None,
    n: int = 256,
    seed: int = 0,
    max_new_tokens: int = 64,
    judge_weights: dict[str, float] | None = None,
    engine: Any = None,
) -> dict[str, Any]:
    """Sample `policy` and `baseline` on the same prompts (world prompts by default) and compare them.

    `baseline`: None = the policy's initial model (`resolve_baseline`). `judge`: 'gold' (the world's
    hidden utility; world prompts only) or any reward source (a reward-model directory or
    module:function), which is how a real evaluation without gold works; `judge_weights` weighs a reward
    model's heads (default: its first head). `engine`: a `rlhf.vllm_client.RolloutEngine` that samples
    both, synced to each in turn (they must share the served architecture). A baseline that tokenizes
    text otherwise than the policy is a UserError."""
    from rlhf.errors import UserError
    from rlhf.evaluation.kl import sampled_kl, tokenizer_difference
    from rlhf.models import load_tokenizer
    from rlhf.rollout import SamplingConfig, sample
    from rlhf.world import corpus, gold
    from rlhf.world.report import load_world_lm, resolve_world_model

    baseline, baseline_from = resolve_baseline(policy, baseline)
    world_prompts = prompts is None  # the default: the world's prompts, for world models
    prompts = prompts if prompts is not None else corpus.sample_prompts(n, seed)
    world = all(corpus.parse_request(p) is not None for p in prompts)
    if judge == "gold" and not world:
        raise UserError("--judge gold needs the bundled world's prompts; give a reward model as the judge")
    if judge != "gold":
        from rlhf.rewards import check_reward_spec

        check_reward_spec(judge)  # before the models load
    policy_tokenizer = load_tokenizer(resolve_world_model(policy, cfg.world, cfg.run.progress))
    try:
        baseline_tokenizer = load_tokenizer(resolve_world_model(baseline, cfg.world, cfg.run.progress))
    except UserError as exc:
        if baseline_from == "--baseline":
            raise
        raise UserError(
            f"baseline {baseline} ({baseline_from}) cannot be loaded: {exc}; give --baseline"
        ) from exc
    difference = tokenizer_difference(policy_tokenizer, baseline_tokenizer)
    if difference is not None:
        raise UserError(
            f"the policy {policy} and the baseline {baseline} ({baseline_from}) have different tokenizers "
            f"({difference}): their KL and samples cannot be compared token by token; give --baseline a "
            "model with the policy's tokenizer, such as its initial model"
        )
    if world_prompts and not _world_tokenizer(policy_tokenizer):
        raise UserError(
            f"{policy} is not a model of the bundled world (another tokenizer), so the world's prompts and "
            "gold judge say nothing about it: give --prompts FILE and --judge RM_DIR (or module:function)"
        )
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0)
    policy_lm, tokenizer = load_world_lm(cfg, policy)
    baseline_lm, baseline_tokenizer = load_world_lm(cfg, baseline)

    def draw(lm, lm_tokenizer):
        if engine is not None:
            engine.sync(lm)
        return sample(lm, lm_tokenizer, prompts, sampling, seed=seed, engine=engine and engine.client)

    ours, theirs = draw(policy_lm, tokenizer), draw(baseline_lm, baseline_tokenizer)
    if judge == "gold":
        score = lambda ps, rs: [gold.utility(p, r) for p, r in zip(ps, rs, strict=True)]  # noqa: E731
    else:
        from rlhf.rewards import load_reward_source

        source = load_reward_source(
            judge, judge_weights, device=cfg.run.device, policy_tokenizer=tokenizer, setting="--judge-weights"
        )
        score = lambda ps, rs: source(ps, rs).tolist()  # noqa: E731
    ours_scores, theirs_scores = score(prompts, ours.responses), score(prompts, theirs.responses)
    _, stats = win_rate(ours_scores, theirs_scores)
    result: dict[str, Any] = {
        "policy": str(policy),
        "baseline": str(baseline),
        "baseline_from": baseline_from,
        "judge": judge,
        **({"judge_weights": judge_weights} if judge_weights else {}),
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
