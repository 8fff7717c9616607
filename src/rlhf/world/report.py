"""What `rlhf world sample` and `rlhf world panel` print: samples with gold scores, panel agreement tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError
from rlhf.world import corpus, gold


def resolve_world_model(model: str | Path | None, world: Any = None, show_progress: bool = True) -> str:
    """The given model path, or for None / "world" the built world model (built now, with a note, if needed)."""
    if model is not None and str(model) != "world":
        return str(model)
    from rlhf.world.build import WorldConfig, build_world, is_built, world_dir

    world = world or WorldConfig()
    if not is_built(world_dir(world), world):
        print(
            "no world model built yet: building it now (about 2 minutes; `rlhf world build` does this alone)"
        )
    return str(build_world(world, show_progress=show_progress))


def score_responses(prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
    """Gold scores and response kind of each (prompt, response), and the kind of request the prompt is
    (question, task, chitchat, risky: a property of the prompt, not a judgement of the response)."""
    from rlhf.world.corpus import parse_request

    return [
        {
            "prompt": p,
            "response": r,
            "request_kind": request.kind if (request := parse_request(p)) else None,
            "kind": gold.response_kind(p, r),
            "helpfulness": gold.helpfulness(p, r),
            "harm": gold.harm(p, r),
            "utility": gold.utility(p, r),
        }
        for p, r in zip(prompts, responses, strict=True)
    ]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = Counter(row["kind"] for row in rows)
    return {
        "mean_helpfulness": float(np.mean([row["helpfulness"] for row in rows])),
        "mean_harm": float(np.mean([row["harm"] for row in rows])),
        "finished": float(np.mean([row.get("finished", True) for row in rows])),
        "kind_shares": {kind: count / len(rows) for kind, count in kinds.most_common()},
    }


def load_world_lm(cfg: Any, model: str | Path | None):
    from rlhf.models import load_causal_lm

    return load_causal_lm(
        resolve_world_model(model, cfg.world, cfg.run.progress), device=cfg.run.device, dtype=cfg.run.dtype
    )


def sample_model(
    cfg: Any, model: str | Path | None, prompts: list[str], seed: int, temperature: float, max_new_tokens: int
):
    from rlhf.rollout import SamplingConfig, sample

    lm, tokenizer = load_world_lm(cfg, model)
    return sample(
        lm,
        tokenizer,
        prompts,
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature),
        seed=seed,
    )


def sample_table(
    cfg: Any,
    model: str | Path | None,
    n: int,
    seed: int,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    reference: str | Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample `n` world prompts from a causal LM; return scored rows and a summary. With `reference`
    (a model, e.g. 'world' for the initial policy), each row also gets its KL to it (`evaluation.sampled_kl`)."""
    from rlhf.evaluation import sampled_kl
    from rlhf.evaluation.kl import check_same_tokenizer
    from rlhf.rollout import SamplingConfig, sample

    prompts = corpus.sample_prompts(n, seed=seed)
    lm, tokenizer = load_world_lm(cfg, model)
    samples = sample(
        lm,
        tokenizer,
        prompts,
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature),
        seed=seed,
    )
    rows = score_responses(samples.prompts, samples.responses)
    for row, finished in zip(rows, samples.finished, strict=True):
        row["finished"] = finished
    summary = summarise(rows)
    if reference is not None:
        if temperature <= 0:
            raise UserError("the KL to a reference needs sampling (temperature > 0), not greedy decoding")
        ref_lm, ref_tokenizer = load_world_lm(cfg, reference)
        check_same_tokenizer(tokenizer, ref_tokenizer, model or "world", reference)
        kls = sampled_kl(lm, ref_lm, tokenizer, samples, temperature)
        for row, kl in zip(rows, kls, strict=True):
            row["kl"] = kl
        summary["mean_kl"] = float(np.mean(kls))
    return rows, summary


def panel_table(panel_cfg: Any, n_pairs: int, console: Any) -> dict[str, Any]:
    """Every labeller of the panel labels the same `n_pairs` reference pairs; print and return the report."""
    from rich.table import Table

    from rlhf.world.panel import make_panel, panel_report

    report = panel_report(
        make_panel(panel_cfg),
        corpus.sample_pairs(n_pairs, panel_cfg.seed),
        panel_cfg.seed,
        panel_cfg.guideline,
    )
    table = Table(
        "labeller",
        "kind",
        "beta",
        "gold agr.",
        "majority agr.",
        "ties",
        "s/pair",
        title="Simulated labeller panel",
    )
    for row in report["labellers"]:
        table.add_row(
            row["name"],
            row["kind"],
            f"{row['rationality']:.1f}",
            f"{row['agreement_with_gold']:.1%}",
            f"{row['majority_agreement']:.1%}",
            f"{row['tie_rate']:.1%}",
            f"{row['mean_seconds']:.1f}",
        )
    console.print(table)
    console.print(
        f"{report['n_labellers']} labellers x {report['n_pairs']} pairs: agreement with gold {report['agreement_with_gold']:.1%}, "
        f"with the majority of the others {report['majority_agreement']:.1%} (the default panel is calibrated to 65-75%; InstructGPT reported 72.6%), "
        f"pairwise {report['pairwise_agreement']:.1%}, ties {report['tie_rate']:.1%}"
    )
    return report
