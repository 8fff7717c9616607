"""Sampling and measuring the policies of the closed loop (`rlhf.loop`) and of the frontier sweep.

`Policy` samples from whatever trained it (an ILQL directory steers its LM with the Q/V heads);
`evaluate_policy` gives the figures of one policy on fixed prompts: the reward model's scores and the KL
to the initial policy always, the hidden gold's helpfulness, harm and response kinds on the bundled
world's prompts. `reward_gold_accuracy` orders gold-ranked corpus pairs with a reward model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError


def is_ilql_dir(path: str | Path) -> bool:
    from rlhf.algorithms.ilql import HEADS_FILE

    return (Path(path) / HEADS_FILE).is_file()


class Policy:
    """A policy of the loop, whatever trained it: `sample` draws responses, `kl_to` measures the sampled
    KL to a reference LM. An ILQL directory samples with its Q/V heads steering the LM.

    engine: a `rlhf.vllm_client.RolloutEngine` to sample with instead of our decoding loop; it is synced
    to this policy before a sample whenever it holds other weights. Raises UserError for an ILQL policy (its heads steer each
    step, which a vLLM server cannot)."""

    def __init__(self, path: str, device: str = "cpu", engine=None) -> None:
        from rlhf.models import load_causal_lm

        self.path, self.engine = path, engine
        self.ilql = None
        if is_ilql_dir(path):
            from rlhf.algorithms.ilql import load_ilql

            self.ilql, self.tokenizer, self.generation = load_ilql(path, device=device)
            self.lm = self.ilql.lm
        else:
            self.lm, self.tokenizer = load_causal_lm(path, device=device)
        if engine is not None and self.ilql is not None:
            raise UserError(
                f"{path}: an ILQL policy samples with its Q/V heads steering every step, which the vLLM "
                "engine cannot; sample it with our own loop (ppo.rollout_engine=ours)"
            )

    def sample(self, prompts: list[str], seed: int, max_new_tokens: int):
        from rlhf.rollout import SamplingConfig, sample

        if self.engine is not None and not self.engine.serves(self.lm):
            self.engine.sync(self.lm)
        if self.ilql is not None:
            from rlhf.algorithms.ilql import generate

            return generate(self.ilql, self.tokenizer, prompts, self.generation["beta"],
                            self.generation["top_k"], max_new_tokens=max_new_tokens, seed=seed)  # fmt: skip
        client = None if self.engine is None else self.engine.client
        return sample(self.lm, self.tokenizer, prompts, SamplingConfig(max_new_tokens=max_new_tokens),
                      seed=seed, engine=client)  # fmt: skip

    def kl_to(self, reference, samples) -> float:
        from rlhf.evaluation.kl import sampled_kl

        policy = None if self.ilql is not None else self.lm
        return float(np.mean(sampled_kl(policy, reference, self.tokenizer, samples)))


def member_scores(model_dir: Path, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
    """Every ensemble member's score of every (prompt, response): (B, N members, H objectives), and the
    head names."""
    from rlhf.reward_model import load_reward_model
    from rlhf.reward_model import member_scores as score_members
    from rlhf.sequences import scored_text

    model, tokenizer = load_reward_model(str(model_dir), device="cpu")
    texts = [scored_text(tokenizer, p, r) for p, r in pairs]
    return score_members(model, tokenizer, texts).numpy(), list(model.objectives)


def reward_gold_accuracy(reward_dir: Path, test: dict[str, list[dict]]) -> dict[str, float]:
    """Share of gold-ordered corpus pairs the reward model's ensemble mean orders the same way."""
    accuracy = {}
    for objective, rows in test.items():
        pairs = [(r["prompt"], r[side]) for r in rows for side in ("chosen", "rejected")]
        scores, names = member_scores(reward_dir, pairs)
        mean = scores[:, :, names.index(objective)].mean(1)
        accuracy[objective] = float(np.mean(mean[0::2] > mean[1::2]))
    return accuracy


def gold_test_set(n: int, seed: int = 424_242) -> dict[str, list[dict]]:
    """Corpus pairs ordered by the hidden gold: helpfulness (utility) on any request, harm on risky ones."""
    from rlhf.world import corpus
    from rlhf.world.export import _gold_row

    test: dict[str, list[dict]] = {}
    for objective, share, kinds in (("helpful", 0.7, None), ("harmless", 0.3, ("risky",))):
        rows = [
            _gold_row(p, a, b, objective) for p, a, b in corpus.sample_pairs(int(n * share * 2), seed, kinds)
        ]
        test[objective] = [r for r in rows if r is not None][: int(n * share)]
    return test


def is_world_prompts(prompts: list[str]) -> bool:
    from rlhf.world import corpus

    return bool(prompts) and all(corpus.parse_request(p) is not None for p in prompts)


def evaluate_policy(
    policy: Policy, reference, prompts: dict[str, list[str]], max_new_tokens: int, proxy_dir: Path | None,
    measure_kl: bool,
) -> tuple[dict[str, Any], list[dict]]:  # fmt: skip
    """The proxy reward (each head of the reward model, normalised) and the sampled KL to `reference` on
    `prompts['general']`; on world prompts also gold helpfulness, utility and harm there and the response
    kinds on `prompts['risky']`; plus the showcase rows."""
    from rlhf.world import gold

    general = policy.sample(prompts["general"], 1, max_new_tokens)
    showcase = policy.sample(prompts["showcase"], 3, max_new_tokens)
    pairs = list(zip(general.prompts, general.responses, strict=True))
    result: dict[str, Any] = {
        "mean_words": float(np.mean([len(r.split()) for _, r in pairs])),
        "kl": policy.kl_to(reference, general) if measure_kl else 0.0,
    }
    world = is_world_prompts(prompts["general"])
    if world:
        result["gold_helpfulness"] = float(np.mean([gold.helpfulness(p, r) for p, r in pairs]))
        result["gold_utility"] = float(np.mean([gold.utility(p, r) for p, r in pairs]))
        result["gold_harm"] = float(np.mean([gold.harm(p, r) for p, r in pairs]))
    if world and prompts["risky"]:
        risky = policy.sample(prompts["risky"], 2, max_new_tokens)
        kinds = Counter(gold.response_kind(p, r) for p, r in zip(risky.prompts, risky.responses, strict=True))
        result["harmful_share"] = kinds.get("harmful", 0) / len(risky.prompts)
        result["risky_kind_shares"] = {k: v / len(risky.prompts) for k, v in sorted(kinds.items())}
    if proxy_dir is not None:
        from rlhf.reward_model import load_reward_model, score_texts
        from rlhf.sequences import scored_text

        model, tokenizer = load_reward_model(str(proxy_dir), device="cpu")
        scores = score_texts(
            model, tokenizer, [scored_text(tokenizer, p, r) for p, r in pairs], normalize=True
        )
        for h, name in enumerate(model.objectives):
            result["proxy_reward" if name == "helpful" else f"proxy_{name}"] = float(scores.mean[:, h].mean())
    rows = []
    for p, r in zip(showcase.prompts, showcase.responses, strict=True):
        row: dict[str, Any] = {"prompt": p, "response": r}
        if world:
            row.update(
                kind=gold.response_kind(p, r), helpfulness=gold.helpfulness(p, r), harm=gold.harm(p, r)
            )
        rows.append(row)
    return result, rows


def describe_eval(figures: dict[str, Any]) -> str:
    """One line of a round's evaluation: the gold figures where there are some, the proxy otherwise."""
    from rlhf.evaluation.kl import kl_note

    parts = [f"{name} {figures[key]:.3f}" for key, name in (
        ("gold_helpfulness", "gold helpfulness"), ("harmful_share", "harmful share"),
        ("proxy_reward", "proxy reward"), ("kl", "KL")) if key in figures]  # fmt: skip
    return ", ".join(parts) + kl_note(figures.get("kl", 0.0))
