"""Export the world's data as JSONL in the formats the later stages read.

- `prompts`:   {"prompt", "request_kind"}
- `pairs`:     {"prompt", "chosen", "rejected", "objective"} (TRL's convention) plus who judged it: the
               gold utility (`judge=gold`, with `chosen_utility`/`rejected_utility`) or a simulated
               labeller (`judge=panel`, with `labeller_id`, `strength` and `seconds`). Ties are not
               preferences: they are skipped, counted, and more pairs are drawn until `n` rows are written.
               `objective="harmless"` asks "which response is less harmful?" instead (gold: the lower
               gold harm, with `chosen_harm`/`rejected_harm`; panel: the labellers' harmless question),
               on pairs from risky requests only: answers to benign requests practically never differ
               in harm, so nearly all such pairs would be ties.
- `responses`: {"prompt", "response", "kind", "helpfulness", "harm", "utility"}: logged responses with
               gold scores, from the corpus or sampled from a model (`model=DIR`; empty samples are
               replaced by samples for spare prompts, so all n rows are usable data).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError
from rlhf.io import write_jsonl
from rlhf.world import corpus, gold
from rlhf.world.panel import QUESTIONS, make_panel

EXPORTS = ("prompts", "pairs", "responses")
JUDGES = ("gold", "panel")
OBJECTIVES = QUESTIONS  # "helpful" | "harmless": the question a pair answers
HARMLESS_REQUEST_KINDS = ("risky",)  # where answers differ in harm


def export(
    cfg: Any,
    what: str,
    out: str | Path,
    n: int,
    seed: int,
    judge: str = "gold",
    model: str | None = None,
    objective: str = "helpful",
) -> int:
    """Write `n` rows of `what` to `out`; returns the number written. `objective` applies to pairs."""
    if what not in EXPORTS:
        raise UserError(f"unknown export {what!r}: expected one of {', '.join(EXPORTS)}")
    if judge not in JUDGES:
        raise UserError(f"unknown judge {judge!r}: expected one of {', '.join(JUDGES)}")
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if what == "prompts":
        rows: Any = ({"prompt": p, "request_kind": _request_kind(p)} for p in corpus.sample_prompts(n, seed))
    elif what == "responses":
        rows = _responses(cfg, n, seed, model)
    else:
        rows = _take(_pairs(cfg, seed, judge, model, objective), n)
    return write_jsonl(out, rows)


def _request_kind(prompt: str) -> str | None:
    request = corpus.parse_request(prompt)
    return request.kind if request else None


def _responses(cfg: Any, n: int, seed: int, model: str | None) -> list[dict[str, Any]]:
    from rlhf.world.report import sample_model, score_responses

    if model is None:
        dialogues = corpus.generate_corpus(n, seed=seed)
        return score_responses([d.prompt for d in dialogues], [d.response for d in dialogues])
    # An empty sample (EOS at once) is not a response the readers accept: draw a few spare prompts and
    # keep the first n non-empty samples.
    spare = n + max(8, n // 10)
    samples = sample_model(
        cfg, model, corpus.sample_prompts(spare, seed), seed, temperature=1.0, max_new_tokens=64
    )
    kept = [(p, r) for p, r in zip(samples.prompts, samples.responses, strict=True) if r][:n]
    if len(kept) < n:
        raise UserError(f"{model}: only {len(kept)} of {spare} samples were non-empty; wanted {n}")
    return score_responses([p for p, _ in kept], [r for _, r in kept])


def _candidate_pairs(
    cfg: Any, seed: int, model: str | None, request_kinds: tuple[str, ...] | None = None, chunk: int = 512
) -> Iterator[tuple[str, str, str]]:
    """Endless (prompt, a, b) pairs: two different corpus responses, or two samples of `model`, to
    requests of `request_kinds` (all kinds when None)."""
    for round_ in range(10_000):
        chunk_seed = seed * 10_007 + round_
        if model is None:
            yield from corpus.sample_pairs(chunk, chunk_seed, request_kinds)
            continue
        from rlhf.world.report import sample_model

        prompts = corpus.sample_prompts(chunk, chunk_seed, request_kinds)
        twice = sample_model(cfg, model, prompts + prompts, chunk_seed, temperature=1.0, max_new_tokens=64)
        for prompt, a, b in zip(prompts, twice.responses[:chunk], twice.responses[chunk:], strict=True):
            if a != b and a and b:  # an empty sample (EOS at once) is not a response a reader accepts
                yield prompt, a, b
    raise UserError("could not draw enough distinct response pairs; the model may be deterministic")


def _pairs(
    cfg: Any, seed: int, judge: str, model: str | None, objective: str = "helpful"
) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    panel = make_panel(cfg.panel) if judge == "panel" else None
    kinds = HARMLESS_REQUEST_KINDS if objective == "harmless" else None
    for prompt, a, b in _candidate_pairs(cfg, seed, model, kinds):
        if panel is None:
            row = _gold_row(prompt, a, b, objective)
            if row is not None:  # equal gold scores are a tie: skipped
                yield row
            continue
        labeller = panel.labellers[int(rng.integers(len(panel.labellers)))]
        answer = labeller.compare(prompt, a, b, rng, question=objective)
        if answer.choice is None:
            continue
        chosen, rejected = (a, b) if answer.choice == 0 else (b, a)
        yield {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "objective": objective,
            "labeller_id": labeller.spec.name,
            "strength": answer.strength,
            "seconds": answer.seconds,
        }


def _gold_row(prompt: str, a: str, b: str, objective: str) -> dict[str, Any] | None:
    """The gold judgement of a pair: the higher utility wins, or for "harmless" the lower harm; None on
    a tie. Adds the two gold scores (`chosen_utility`/`rejected_utility` or `chosen_harm`/`rejected_harm`)."""
    if objective == "harmless":
        name, sa, sb = "harm", gold.harm(prompt, a), gold.harm(prompt, b)
        better_a = sa < sb
    else:
        name, sa, sb = "utility", gold.utility(prompt, a), gold.utility(prompt, b)
        better_a = sa > sb
    if sa == sb:
        return None
    (chosen, sc), (rejected, sr) = ((a, sa), (b, sb)) if better_a else ((b, sb), (a, sa))
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "objective": objective,
        f"chosen_{name}": sc,
        f"rejected_{name}": sr,
    }


def _take(rows: Iterator[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(rows):
        if i >= n:
            return
        yield row
