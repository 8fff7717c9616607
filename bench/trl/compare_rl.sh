#!/usr/bin/env bash
# Ours against TRL on the PPO, RLOO and GRPO benchmark configurations, run in turn on one machine
# (ours, TRL PPO, TRL RLOO, TRL GRPO with beta 0, TRL GRPO with beta 0.05), ROUNDS times, so that a
# machine whose speed drifts during the session affects both sides alike. Set-up of the two TRL venvs
# and of the prompt files: see the docstrings of trl_ppo_bench.py, trl_rloo_bench.py, trl_grpo_bench.py.
# Usage: bench/trl/compare_rl.sh [OUT_DIR] [ROUNDS]; then bench/trl/summarise_rl.py OUT_DIR
set -euo pipefail
out=${1:-bench/trl/results/rl}
rounds=${2:-3}
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
  .venv/bin/rlhf bench ppo --variant ppo --variant rloo --variant grpo --variant grpo_nokl --out "$out/ours_$i.json"
  (cd bench/trl && /tmp/trl112/bin/python trl_ppo_bench.py /tmp/bench_prompts_trl.jsonl "../../$out/trl_ppo_$i.json")
  (cd bench/trl && /tmp/trlvenv/bin/python trl_rloo_bench.py /tmp/bench_prompts_trl8.jsonl "../../$out/trl_rloo_$i.json")
  (cd bench/trl && /tmp/trlvenv/bin/python trl_grpo_bench.py /tmp/bench_prompts_trl8.jsonl "../../$out/trl_grpo_$i.json")
  (cd bench/trl && /tmp/trlvenv/bin/python trl_grpo_bench.py /tmp/bench_prompts_trl8.jsonl "../../$out/trl_grpo_beta_$i.json" --beta 0.05)
done
