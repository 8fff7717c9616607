"""The helpfulness-harmlessness frontier: `rlhf frontier`.

One reward model with helpful and harmless heads; several PPO policies trained from the same initial
policy, each trading the two off differently -- a fixed weight on the harmless head (the weighted sum)
or a bound on the expected harm cost (Safe RLHF's constraint, Dai et al. 2023) -- and each evaluated by
the world's hidden gold on the same prompts as the loop's rounds. The points, and the frontier of those
no other point beats on both axes, go to `<out>/frontier.json` and `<out>/frontier.png`; inside a loop
run directory the report draws them beside the rounds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError, help_field
from rlhf.errors import UserError


@dataclass
class FrontierConfig:
    """`rlhf frontier`: PPO policies between helpful and harmless."""

    harm_weights: list[float] = help_field(
        [0.0, 1.0, 3.0],
        "Weighted sum: one policy per weight w on the harmless head (helpful + w * harmless).",
    )
    cost_thresholds: list[float] = help_field(
        [], "Safe RLHF: one policy per bound on the mean harm cost (normalised units)."
    )
    steps: int = help_field(20, "PPO iterations per policy.")

    def validate(self) -> None:
        if not self.harm_weights and not self.cost_thresholds:
            raise ConfigError("frontier: give at least one harm weight or cost threshold")
        if self.steps < 1:
            raise ConfigError(f"frontier.steps must be at least 1; got {self.steps}")


def settings(cfg: FrontierConfig) -> list[tuple[str, str, float]]:
    """(name, method, parameter) per policy of the sweep."""
    return [(f"w={w:g}", "weighted", w) for w in cfg.harm_weights] + [
        (f"cost<={t:g}", "lagrangian", t) for t in cfg.cost_thresholds
    ]


def run_frontier(
    root: Any,
    cfg: FrontierConfig,
    reward_dir: str | Path,
    out: str | Path,
    show_progress: bool = True,
    log=print,
) -> list[dict[str, Any]]:
    """Train and evaluate one policy per setting; write `<out>/frontier.json` and `<out>/frontier.png`."""
    from rlhf.algorithms import ppo
    from rlhf.evaluation.kl import tokenizer_difference
    from rlhf.evaluation.policy import Policy, describe_eval, evaluate_policy
    from rlhf.evaluation.report import FRONTIER_FILE, frontier_axes, pareto_front, plot_frontier
    from rlhf.io import write_json, write_jsonl
    from rlhf.loop import OBJECTIVES, PromptSource
    from rlhf.models import load_causal_lm, load_tokenizer
    from rlhf.reward_model import load_reward_model
    from rlhf.world.report import resolve_world_model

    cfg.validate()
    initial = str(resolve_world_model(root.loop.policy, root.world, show_progress))
    # the prompts first (a file too small is an error before any model loads), rendered as the loop does
    source = PromptSource(root.loop, load_tokenizer(initial) if root.loop.prompts else None)
    prompts = source.evaluation()
    reward_dir = Path(reward_dir).expanduser()
    model, reward_tokenizer = load_reward_model(str(reward_dir), device="cpu")
    missing = [o for o in OBJECTIVES if o not in model.objectives]
    if missing:
        raise UserError(f"{reward_dir}: the frontier needs helpful and harmless heads; it lacks {missing}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    reference, tokenizer = load_causal_lm(initial, device="cpu")
    if root.loop.policy == "world" and tokenizer_difference(tokenizer, reward_tokenizer) is not None:
        # a reward model of your own model with the default policy: the sweep would train the world's
        raise UserError(
            f"{reward_dir} was not trained on the world model (another tokenizer), but the policy is the "
            "world model: give your policy and prompts with --policy MODEL --prompts FILE"
        )
    train_prompts = root.ppo.prompts
    if source.file_prompts is not None:  # the evaluation prompts stay held out of training, as in the loop
        train_prompts = str(out / "train_prompts.jsonl")
        write_jsonl(train_prompts, [{"prompt": p} for p in source.file_prompts])
    points = []
    for name, method, value in settings(cfg):
        policy_dir = out / "frontier" / name.replace("<=", "_le_").replace("=", "_")
        ppo_cfg = dataclasses.replace(
            root.ppo, policy=initial, reference="", reward=str(reward_dir), steps=cfg.steps,
            normalize_rewards=True, reward_weights={"helpful": 1.0}, cost="", cost_weights={},
            prompts=train_prompts,
        )  # fmt: skip
        if method == "weighted":
            ppo_cfg.reward_weights = {"helpful": 1.0, "harmless": value}
        else:
            ppo_cfg.cost, ppo_cfg.cost_weights, ppo_cfg.cost_threshold = (
                str(reward_dir),
                {"harmless": -1.0},
                value,
            )
        result = ppo.train(ppo_cfg, root.run, policy_dir, world=root.world, show_progress=show_progress)
        figures, _ = evaluate_policy(Policy(str(policy_dir)), reference, prompts, root.loop.max_new_tokens,
                                     reward_dir, True)  # fmt: skip
        point = {"name": name, "method": method, "parameter": value, "policy": str(policy_dir), **figures}
        if result.lagrange is not None:
            point["lagrange"] = result.lagrange
        points.append(point)
        log(f"{name}: {describe_eval(figures)}")
    front = pareto_front([frontier_axes(p) for p in points])
    for i, p in enumerate(points):
        p["on_frontier"] = i in front
    write_json(out / FRONTIER_FILE, points)
    plot_frontier([], points, out / "frontier.png")
    return points
