"""The reward model's scoring of one GRPO batch with each prompt run once against each row padded (issue #19).

Usage: .venv/bin/python bench/reward_shared_prompts.py MODEL_DIR PROMPTS.jsonl OUT.json [--repeats 7] [--threads 1]

A reward model on MODEL_DIR's trunk (e.g. the 26M Llama of bench/make_llama.py; a fresh scalar head, as
`rlhf bench ppo` builds it) scores 8 prompts of PROMPTS.jsonl (bench/trl/make_prompts.py's) x 4 random
responses of 32 tokens, rows shuffled as a batch is: with `groups` (each prompt once, its 4 responses
attending to it: `rlhf.reward_model.member_scores`) and without (padded rows), alternated, REPEATS times
each after a first call of each. CPU time of the process (`time.process_time`) is the measure, so other
jobs on a shared machine slow the wall clock but hardly the figure; with --threads 1 it is the work done.
Writes the median seconds of each, all runs, the speed-up, and the largest difference of the scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlhf.packing import pack_token_groups
from rlhf.reward_model import init_reward_model, load_reward_model, save_reward_model, score_texts
from rlhf.sequences import encode_scored, scored_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("out")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rm, tokenizer = init_reward_model(args.model, ["reward"], 1, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_reward_model(Path(tmp) / "rm", rm, tokenizer)
        rm, tokenizer = load_reward_model(Path(tmp) / "rm")
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()][:8]
    g = torch.Generator().manual_seed(0)
    texts, prompt_of = [], []
    for i, prompt in enumerate(prompts):
        for _ in range(4):
            response = tokenizer.decode(torch.randint(10, len(tokenizer), (32,), generator=g).tolist())
            texts.append(scored_text(tokenizer, prompt, response))
            prompt_of.append(i)
    order = torch.randperm(len(texts), generator=g).tolist()  # not grouped, as a shuffled batch
    texts = [texts[b] for b in order]
    groups = [[row for row, b in enumerate(order) if prompt_of[b] == i] for i in range(len(prompts))]
    shared = score_texts(rm, tokenizer, texts, groups=groups).mean  # the first call: checked against padded
    padded = score_texts(rm, tokenizer, texts).mean
    times: dict[str, list[float]] = {"prompt_once": [], "padded": []}
    for _ in range(args.repeats):
        for name, grouping in (("prompt_once", groups), ("padded", None)):
            started = time.process_time()
            score_texts(rm, tokenizer, texts, groups=grouping)
            times[name].append(time.process_time() - started)
    median = {name: statistics.median(runs) for name, runs in times.items()}
    rows = encode_scored(tokenizer, texts, 512)
    packed, _ = pack_token_groups(rows, groups)
    result = {
        "benchmark": "reward model scoring, 8 prompts x 4 responses of 32 tokens",
        "command": f"bench/reward_shared_prompts.py {args.model} {args.prompts} --repeats {args.repeats} "
        f"--threads {args.threads}",
        "tokens": {
            "rows": len(rows),
            "padded_positions": len(rows) * max(map(len, rows)),
            "real_tokens": sum(map(len, rows)),
            "prompt_once_tokens": packed.input_ids.shape[1],
        },
        "packed_verdict": bool(rm._rlhf_packing),
        "max_abs_score_difference": float((shared - padded).abs().max()),
        "cpu_seconds_median": median,
        "cpu_seconds_runs": times,
        "speedup": median["padded"] / median["prompt_once"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("tokens", "max_abs_score_difference", "cpu_seconds_median", "speedup")}
        )
    )


if __name__ == "__main__":
    main()
