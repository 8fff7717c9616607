"""The TRL side of the GPU check's vLLM case (scripts/gpu_check.sh): TRL's GRPOTrainer with vLLM
generation (``use_vllm=True``, colocate mode: vLLM in the trainer's process, TRL's own default for one
GPU) on the same random-weight model, prompts and reward model as rlhf's run, logged in rlhf's metrics
format (``time/episodes_per_s``, peak memory) so that ``scripts/gpu_check.py summary`` reads both.

    python scripts/gpu_check_trl.py MODEL REWARD_MODEL PROMPTS.jsonl OUT_DIR --steps 6 --batch 32

Runs where trl and vllm import (neither is a dependency of rlhf); otherwise it says so and exits 3.
Configuration as rlhf's GRPO run: 4 generations per prompt, `--batch` completions a step, at most 48
new tokens, temperature 1, one gradient step per generation, no KL term (TRL's default beta=0; rlhf's
run sets ppo.kl_coef=0 too), bf16 weights on a GPU (fp32 on CPUs).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("model", "reward", "prompts", "out"):
        parser.add_argument(name)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = parser.parse_args()
    try:
        import torch
        import trl
        import vllm  # noqa: F401 -- TRL's colocate mode runs it in this process
        from datasets import Dataset
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
            TrainerCallback,
        )
    except ImportError as error:
        print(f"trl_vllm skipped: {error} (this case needs trl and vllm in one environment)")
        return 3
    gpu = torch.cuda.is_available()
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if gpu else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(args.reward, num_labels=1, dtype=dtype)
    reward.config.pad_token_id = tokenizer.pad_token_id
    prompts = [json.loads(line)["prompt"] for line in open(args.prompts)]
    n_params = sum(p.numel() for p in policy.parameters())

    class Metrics(TrainerCallback):
        """One line per step in rlhf's metrics format: episodes/s of the step, peak memory so far."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, _args, state, *__, **___):
            seconds = time.perf_counter() - self.started
            row = {"step": state.global_step, "time/episodes_per_s": args.batch / seconds,
                   "memory/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "parallel/local_parameters": n_params, "parallel/parameters": n_params}  # fmt: skip
            if gpu:
                row["memory/peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
                row["memory/peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
            with open(out / "logs" / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    config = trl.GRPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_generations=4, max_completion_length=48, num_iterations=1, beta=0.0, temperature=1.0,
        learning_rate=1e-6, max_steps=args.steps, disable_dropout=True, gradient_checkpointing=False,
        bf16=gpu, use_cpu=not gpu, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
        use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=args.gpu_memory_utilization, seed=0,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=reward, reward_processing_classes=tokenizer, args=config,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                              callbacks=[Metrics()])  # fmt: skip
    trainer.train()
    print(f"trl {trl.__version__} GRPOTrainer with vLLM (colocate): {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
