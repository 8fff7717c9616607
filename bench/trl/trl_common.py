"""Shared by the TRL PPO/RLOO/GRPO benchmarks (run in a TRL venv; rlhf is not imported): arguments, prompts,
models, a step timer and the JSON summary."""

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)


def parse_args(doc, iterations, warmup, **extra):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", help="JSONL from make_prompts.py (its .meta.json names the model)")
    parser.add_argument("out", help="JSON file for the figures")
    parser.add_argument(
        "--model", "--world", dest="world", help="model directory (default: from PROMPTS.meta.json)"
    )
    parser.add_argument("--iterations", type=int, default=iterations, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed iterations first")
    for name, (kind, default, help_) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=help_)
    args = parser.parse_args()
    meta = json.loads(Path(f"{Path(args.prompts).with_suffix('')}.meta.json").read_text())
    args.world = args.world or meta["world_dir"]
    args.prompt_texts = [json.loads(line)["prompt"] for line in open(args.prompts)]
    args.prompt_meta = meta
    return args


def load_models(world, reference=True):
    """Policy (and a separate reference) LM, and a same-size reward model with a fresh scalar head."""
    tokenizer = AutoTokenizer.from_pretrained(world, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(world, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(world, dtype=torch.float32) if reference else None
    torch.manual_seed(0)
    reward = AutoModelForSequenceClassification.from_pretrained(
        world, num_labels=1, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer, policy, ref, reward


class StepTimer(TrainerCallback):
    """Wall time of each whole iteration: from one `on_step_end` to the next (from `on_train_begin` for the
    first), so rollout, scoring, updates and logging all count; PPOTrainer never calls `on_step_begin`."""

    def __init__(self):
        self.times, self.logs, self.last = [], [], None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def machine():
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "python": platform.python_version(),
    }


def describe(model_dir):
    """Architecture and size of the policy, read from its directory."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return (
        f"{config.model_type} {config.num_hidden_layers} layers x {config.hidden_size} hidden, "
        f"{config.num_attention_heads} heads, vocab {config.vocab_size}, {n / 1e6:.1f}M parameters"
    )


def summarise(benchmark, args, timer, episodes_per_iteration, configuration, **extra):
    timed = timer.times[args.warmup :]
    per_iteration = statistics.median(timed)
    figures = {
        "benchmark": benchmark,
        "configuration": {
            "model": f"{args.world} ({describe(args.world)}), fp32",
            "prompts": f"{args.prompts}: {args.prompt_meta['prompts']} prompts, "
            f"mean {args.prompt_meta['mean_tokens']:.1f} tokens",
            **configuration,
            "warmup_iterations": args.warmup,
            "timed_iterations": len(timed),
            "statistic": "median wall seconds per iteration over the timed iterations",
        },
        "machine": machine(),
        "episodes_per_second": episodes_per_iteration / per_iteration,
        "seconds_per_iteration": per_iteration,
        "seconds_per_iteration_min_max": [min(timed), max(timed)],
        "seconds_per_iteration_all": timer.times,
        **extra,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return figures
