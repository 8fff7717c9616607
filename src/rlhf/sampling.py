"""`rlhf sample`: a model's responses to your prompt file, K per prompt, as JSONL for the next step.

Two output formats:
- `responses`: one row per response, `{"prompt", "response"}`, the rows `rlhf reward score` and
  `rlhf reward normalize --samples` read;
- `tasks`: one row per prompt, `{"prompt", "responses": [...]}`, labelling tasks for `rlhf label import`
  (a pairwise task for two responses, a ranking for more; docs/labelling.md).

Prompts are read as every trainer reads them (`rlhf.data.load_prompts`: chat messages rendered with the
model's own template), and sampled with the training sampler (`rlhf.rollout.sample`), so these are the
responses PPO would see. A prompt longer than the context leaves beside `max_new_tokens` is cut from the
left for the model, as in training; its row keeps the whole prompt (what a labeller should read), and the
summary counts such prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.errors import UserError
from rlhf.rollout import SamplingConfig, sample

FORMATS = ("responses", "tasks")
MAX_TASK_RESPONSES = 9  # the labelling app ranks at most 9 responses (rlhf.feedback.records)


@dataclass
class SampleSummary:
    """What `sample_file` wrote."""

    rows: int  # rows written
    prompts: int  # prompts read
    responses: int  # responses sampled
    unfinished: int  # responses cut at max_new_tokens without emitting EOS
    left_out: int  # tasks format: prompts with fewer than 2 different non-empty responses
    cut_prompts: int = (
        0  # prompts longer than the context leaves beside max_new_tokens: the model saw their end
    )
    prompt_room: int | None = None  # the tokens of prompt the context leaves (None: no known limit)


def sample_responses(
    model: Any, tokenizer: Any, prompts: list[str], n_per_prompt: int, cfg: SamplingConfig, seed: int = 0
) -> tuple[list[list[str]], int]:
    """`n_per_prompt` responses to each prompt, from `rlhf.rollout.sample` on each prompt repeated K times
    in a row; returns them grouped per prompt, and how many ended at max_new_tokens without EOS."""
    repeated = [p for p in prompts for _ in range(n_per_prompt)]
    samples = sample(model, tokenizer, repeated, cfg, seed=seed)
    grouped = [samples.responses[i * n_per_prompt : (i + 1) * n_per_prompt] for i in range(len(prompts))]
    return grouped, samples.finished.count(False)


def output_rows(prompts: list[str], responses: list[list[str]], fmt: str) -> tuple[list[dict], int]:
    """The rows of one output format, and (tasks) how many prompts were left out: a labelling task needs
    two different non-empty responses, and repeats within a task are dropped."""
    if fmt == "responses":
        return [
            {"prompt": p, "response": r} for p, group in zip(prompts, responses, strict=True) for r in group
        ], 0
    rows = []
    for prompt, group in zip(prompts, responses, strict=True):
        distinct = list(dict.fromkeys(r for r in group if r.strip()))
        if len(distinct) >= 2:
            rows.append({"prompt": prompt, "responses": distinct})
    return rows, len(prompts) - len(rows)


def sample_file(
    model_path: str | Path,
    prompts_path: str | Path,
    out: str | Path,
    n_per_prompt: int = 1,
    cfg: SamplingConfig | None = None,
    seed: int = 0,
    fmt: str = "responses",
    device: str = "auto",
    dtype: str = "auto",
) -> SampleSummary:
    """Sample `n_per_prompt` responses of the causal LM at `model_path` to every prompt of `prompts_path`
    and write them to `out` (JSONL, written atomically) in format `fmt` (see the module docstring)."""
    from rlhf.data import load_prompts
    from rlhf.evaluation.policy import is_ilql_dir
    from rlhf.io import write_jsonl
    from rlhf.models import load_causal_lm
    from rlhf.sequences import context_length, encode_prompt

    cfg = cfg or SamplingConfig()
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if n_per_prompt < 1:
        raise UserError(f"--n-per-prompt {n_per_prompt}: give 1 or more")
    if fmt == "tasks" and not 2 <= n_per_prompt <= MAX_TASK_RESPONSES:
        raise UserError(
            f"--format tasks with --n-per-prompt {n_per_prompt}: a labelling task compares 2 to "
            f"{MAX_TASK_RESPONSES} responses; give --n-per-prompt 2 to {MAX_TASK_RESPONSES}"
        )
    if is_ilql_dir(model_path):
        raise UserError(
            f"{model_path} is an ILQL model, steered by its heads: sample it with `rlhf ilql generate --out FILE`"
        )
    model, tokenizer = load_causal_lm(model_path, device=device, dtype=dtype)
    prompts = load_prompts(prompts_path, tokenizer=tokenizer)
    room = context_length(model.config)
    room = None if room is None else room - cfg.max_new_tokens
    cut = 0 if room is None else sum(len(encode_prompt(tokenizer, p)) > room for p in prompts)
    responses, unfinished = sample_responses(model, tokenizer, prompts, n_per_prompt, cfg, seed)
    rows, left_out = output_rows(prompts, responses, fmt)
    if not rows:
        raise UserError(
            f"{prompts_path}: no prompt got two different non-empty responses to make a task of "
            "(greedy decoding gives one; sample with --temperature > 0)"
        )
    write_jsonl(out, rows)
    return SampleSummary(
        len(rows), len(prompts), len(prompts) * n_per_prompt, unfinished, left_out, cut, room
    )
