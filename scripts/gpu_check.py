"""Helpers of scripts/gpu_check.sh (the GPU check of docs/parallel.md): build the random-weight Llama,
and summarise the runs' metrics into one table and one JSON file.

    python scripts/gpu_check.py model DIR --tokenizer TOK [--size 0.5b|tiny]
    python scripts/gpu_check.py summary RUNS_DIR OUT_JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# Llama shapes: ~0.49B parameters with the world's small vocabulary (24 blocks of 1280, MLP 3584);
# `tiny` is the CPU smoke test's (2 blocks of 64, heads of 32: vLLM's CPU attention has no kernel for 16).
SIZES = {
    "0.5b": dict(hidden_size=1280, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=20),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
}
# the logged throughput of each trainer (rlhf.train_loop's rate_name; PPO's time/episodes_per_s)
RATES = {"reward": "time/pairs_per_s", "dpo": "time/pairs_per_s", "grpo": "time/episodes_per_s",
         "trl": "time/episodes_per_s"}  # fmt: skip
# the vLLM case's comparisons: (numerator, denominator, what, goal)
RATIOS = (("grpo_vllm", "trl_vllm", "rlhf GRPO with vLLM / TRL GRPOTrainer with vLLM", 1.3),
          ("grpo_vllm", "grpo_single", "rlhf GRPO with vLLM / with our sampler", None))  # fmt: skip


def build_model(out: Path, tokenizer_dir: Path, size: str) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, **SIZES[size],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"{out}: random-weight Llama, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


def summarise(runs: Path, out: Path) -> int:
    """One row per run directory RUNS/<trainer>_<config>: median throughput over the logged steps after
    the first (start-up and compilation excluded), peak memory, parameters held; `failed` for a run
    without metrics; and the vLLM case's ratios (`RATIOS`) where both runs are there. Returns the number
    of failed runs (a run whose status says `skipped` is not one)."""
    rows, failed = [], 0
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        trainer, config = run.name.split("_", 1)
        metrics = run / "logs" / "metrics.jsonl"
        lines = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        lines = [r for r in lines if RATES[trainer] in r]
        row = {"trainer": trainer, "config": config, "status": (run / "status").read_text().strip()}
        if not lines or row["status"] != "ok":
            failed += not row["status"].startswith("skipped")
            rows.append(row)
            continue
        rates = [r[RATES[trainer]] for r in (lines[1:] or lines)]
        last = lines[-1]
        row.update(
            rate=round(statistics.median(rates), 2),
            unit=RATES[trainer].split("/")[1],
            steps=len(lines),
            peak_allocated_gib=last.get("memory/peak_allocated_gib"),
            peak_reserved_gib=last.get("memory/peak_reserved_gib"),
            peak_rss_mib=round(last["memory/peak_rss_mib"]),
            local_parameters=last["parallel/local_parameters"],
            parameters=last["parallel/parameters"],
        )
        rows.append(row)
    rates = {f"{r['trainer']}_{r['config']}": r["rate"] for r in rows if "rate" in r}
    ratios = [
        {"what": what, "ratio": round(rates[a] / rates[b], 3), "goal": goal}
        for a, b, what, goal in RATIOS
        if a in rates and b in rates
    ]
    out.write_text(json.dumps({"runs": rows, "ratios": ratios}, indent=1) + "\n")
    print(f"{'trainer':8} {'config':7} {'status':8} {'rate':>10} {'unit':16} {'peak alloc GiB':>14} "
          f"{'reserved GiB':>12} {'RSS MiB':>8} {'params held':>12}")  # fmt: skip
    for r in rows:
        print(
            f"{r['trainer']:8} {r['config']:7} {r['status']:8} {r.get('rate', ''):>10} {r.get('unit', ''):16} "
            f"{r.get('peak_allocated_gib') or 0:14.2f} {r.get('peak_reserved_gib') or 0:12.2f} "
            f"{r.get('peak_rss_mib', 0):8} {r.get('local_parameters', 0):12.0f}"
        )
    for r in ratios:
        goal = (
            ""
            if r["goal"] is None
            else f" (goal {r['goal']}x: {'met' if r['ratio'] >= r['goal'] else 'not met'})"
        )
        print(f"{r['what']}: {r['ratio']:.2f}x{goal}")
    return failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model")
    model.add_argument("out", type=Path)
    model.add_argument("--tokenizer", type=Path, required=True)
    model.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    summary = sub.add_parser("summary")
    summary.add_argument("runs", type=Path)
    summary.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "model":
        build_model(args.out, args.tokenizer, args.size)
        return 0
    return 1 if summarise(args.runs, args.out) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
