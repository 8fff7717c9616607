"""`rlhf bench ...`: throughput and memory of the real training code paths on fixed configurations.

Figures are printed and written as JSON with the configuration and the machine, so a reader can rerun
them. For comparisons between whole processes, wrap the command in `farm-bench` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pairs(n: int, target_tokens: int, tokenizer: Any, seed: int = 0) -> list:
    """World pairs whose prompt+response is about `target_tokens` long: responses of one request are
    concatenated until long enough (the reference configuration has sequences of about 75 tokens)."""
    from rlhf.data import PreferencePair
    from rlhf.world import corpus

    rng = np.random.default_rng(seed)
    pairs = []
    for prompt, a, b in corpus.sample_pairs(n, seed):
        request = corpus.parse_request(prompt)
        texts = []
        for first in (a, b):
            text = first
            while True:
                kind = rng.choice(corpus.RESPONSE_KINDS[request.kind])
                longer = f"{text} {corpus.write_response(request, str(kind), rng)}"
                # Stop at whichever length is nearer the target, so the mean lands close to it.
                if len(tokenizer(f"{prompt} {longer}")["input_ids"]) - target_tokens > target_tokens - len(
                    tokenizer(f"{prompt} {text}")["input_ids"]
                ):
                    break
                text = longer
            texts.append(text)
        pairs.append(PreferencePair(prompt=prompt, chosen=texts[0], rejected=texts[1]))
    return pairs


def bench_reward(
    cfg: Any, out: str | Path, steps: int = 30, warmup: int = 5, batch_size: int = 32, bf16: bool = False
) -> dict[str, Any]:
    """Time the reward trainer's step (one forward of chosen+rejected, backward, AdamW) on world pairs."""
    from rlhf.algorithms.reward import RewardConfig, make_pair_batches, pair_loss
    from rlhf.reward_model import init_reward_model, tokenize_texts
    from rlhf.world.report import resolve_world_model

    backbone = resolve_world_model("world", cfg.world, cfg.run.progress)
    reward_cfg = RewardConfig(batch_size=batch_size, max_length=128)
    torch.manual_seed(0)
    runs = []
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        model, tokenizer = init_reward_model(backbone, ["reward"], 1, seed=0)
        pairs = bench_pairs(batch_size * (steps + warmup), 75, tokenizer)
        batches = make_pair_batches(
            pairs,
            partial(tokenize_texts, tokenizer, max_length=reward_cfg.max_length),
            ["reward"],
            batch_size,
            reward_cfg,
        )
        lengths = [len(row) for b in batches for row in b.chosen + b.rejected]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        boot = torch.ones(1, batch_size)
        model.train()
        timings = []
        for i, batch in enumerate(batches):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, _ = pair_loss(
                    model, batch, tokenizer.pad_token_id, torch.device("cpu"), reward_cfg, boot
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                timings.append(time.perf_counter() - started)
        per_step = float(np.median(timings))
        runs.append(
            {
                "precision": precision,
                "pairs_per_second": batch_size / per_step,
                "seconds_per_step": per_step,
                "seconds_per_step_min_max": [float(np.min(timings)), float(np.max(timings))],
                "timed_steps": len(timings),
                "mean_tokens_per_sequence": float(np.mean(lengths)),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    figures = {
        "benchmark": "reward",
        "command": "rlhf bench reward",
        "configuration": {
            "backbone": "bundled world Llama (4 layers x 128 hidden, 4 heads)",
            "batch_pairs": batch_size,
            "max_length": reward_cfg.max_length,
            "target_tokens_per_sequence": 75,
            "optimizer": "AdamW, grad clip 1.0",
            "warmup_steps": warmup,
            "statistic": "median seconds per step over the timed steps",
        },
        "machine": machine(),
        "runs": runs,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures


def bench_prompts(n: int, target_tokens: int, tokenizer: Any, seed: int = 0) -> list[str]:
    """World prompts of about `target_tokens` tokens: an earlier exchange, then the request; the `n`
    candidates nearest the target length, in corpus order."""
    from rlhf.world import corpus

    dialogues = corpus.generate_corpus(8 * n, seed)
    candidates = [
        f"{a.prompt} {a.response}\n{b.prompt}" for a, b in zip(dialogues[::2], dialogues[1::2], strict=False)
    ]
    lengths = [len(ids) for ids in tokenizer(candidates)["input_ids"]]
    nearest = sorted(range(len(candidates)), key=lambda i: abs(lengths[i] - target_tokens))[:n]
    return [candidates[i] for i in sorted(nearest)]


def bench_ppo(
    cfg: Any, out: str | Path, iterations: int = 6, warmup: int = 1, batch_size: int = 32
) -> dict[str, Any]:
    """Time PPO iterations (rollout with a separate reference and reward model, 4 epochs, 1 minibatch) and
    plain `generate` on the same model and batch as the rollout's ceiling."""
    import copy
    import tempfile

    from torch import nn

    from rlhf.algorithms.ppo import PPOConfig, disable_dropout, ppo_step
    from rlhf.models import load_causal_lm
    from rlhf.reward_model import init_reward_model, save_reward_model
    from rlhf.rewards import load_reward_source
    from rlhf.rl_math import FixedKLController
    from rlhf.world.report import resolve_world_model

    world_dir = resolve_world_model("world", cfg.world, cfg.run.progress)
    policy, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    disable_dropout(policy)
    ref_policy = copy.deepcopy(policy).eval().requires_grad_(False)
    value_head = nn.Linear(policy.config.hidden_size, 1)
    with tempfile.TemporaryDirectory() as tmp:  # a reward model of the same size as the policy
        rm, rm_tokenizer = init_reward_model(world_dir, ["reward"], 1, seed=0)
        save_reward_model(Path(tmp) / "rm", rm, rm_tokenizer)
        reward_fn = load_reward_source(str(Path(tmp) / "rm"), device="cpu")
    ppo_cfg = PPOConfig(batch_size=batch_size, mini_batch_size=batch_size, ppo_epochs=4, max_new_tokens=32)
    optimizer = torch.optim.Adam([*policy.parameters(), *value_head.parameters()], lr=1e-5, eps=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    prompts = bench_prompts(batch_size * (iterations + warmup), 44, tokenizer)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    rows = []
    for i in range(iterations + warmup):
        started = time.perf_counter()
        stats = ppo_step(policy, value_head, ref_policy, tokenizer, optimizer, scheduler, reward_fn, FixedKLController(0.05),
                         prompts[i * batch_size : (i + 1) * batch_size], ppo_cfg, generator)  # fmt: skip
        seconds = time.perf_counter() - started
        if i >= warmup:
            rows.append(
                (
                    seconds,
                    stats["time/generation_share"],
                    stats["response/length"],
                    stats["time/generate_tokens_per_s"],
                )
            )
    per_iteration = float(np.median([r[0] for r in rows]))
    share = float(np.median([r[1] for r in rows]))
    length = float(np.mean([r[2] for r in rows]))

    # The ceiling: plain generate, same model and batch, 64 new tokens forced.
    policy.eval()
    enc = tokenizer(prompts[:batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
    gen_times = []
    for _ in range(3):
        started = time.perf_counter()
        with torch.no_grad():
            policy.generate(
                **enc,
                max_new_tokens=64,
                min_new_tokens=64,
                do_sample=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        gen_times.append(time.perf_counter() - started)
    figures = {
        "benchmark": "ppo",
        "command": "rlhf bench ppo",
        "configuration": {
            "policy": "bundled world Llama (4 layers x 128 hidden, 4 heads), fp32",
            "reference": "separate frozen copy",
            "reward_model": "same size, separate",
            "value": "shared-trunk value head (our default)",
            "batch_prompts": batch_size,
            "prompt_tokens": "about 44",
            "max_new_tokens": 32,
            "ppo_epochs": 4,
            "minibatches": 1,
            "timed_iterations": len(rows),
            "statistic": "median over iterations",
        },
        "machine": machine(),
        "episodes_per_second": batch_size / per_iteration,
        "seconds_per_iteration": per_iteration,
        "generation_share": share,  # the whole rollout: generate, policy and reference forwards, decoding
        "mean_response_tokens": length,
        "rollout_generate_tokens_per_second": float(np.median([r[3] for r in rows])),
        "plain_generate_tokens_per_second": batch_size * 64 / float(np.median(gen_times)),
        "peak_rss_mib": peak_rss_mib(),
    }
    figures["rollout_vs_generate"] = (
        figures["rollout_generate_tokens_per_second"] / figures["plain_generate_tokens_per_second"]
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures
