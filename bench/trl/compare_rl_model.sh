#!/usr/bin/env bash
# Ours against TRL on a model directory of one's own (e.g. the ~26M random Llama of bench/make_llama.py),
# PPO and GRPO, run in turn on one machine, ROUNDS times (as compare_rl.sh does for the world model): ours
# (variants ppo, grpo, grpo_nokl), TRL PPO, TRL GRPO with beta 0, TRL GRPO with beta 0.05. The same model,
# prompts and batch shapes on both sides: make_prompts.py --model writes the prompts our bench selects for
# ITERATIONS timed + 1 warm-up iterations (32 x (ITERATIONS + 1) for PPO, 8 x (ITERATIONS + 1) for GRPO), and
# the TRL scripts run 1 warm-up + ITERATIONS timed steps over them. TRL venvs: see the docstrings of
# trl_ppo_bench.py and trl_grpo_bench.py.
# Usage: bench/trl/compare_rl_model.sh MODEL_DIR [OUT_DIR] [ROUNDS] [ITERATIONS]; then bench/trl/summarise_rl.py OUT_DIR
# RLHF (default .venv/bin/rlhf) and PYTHON (default .venv/bin/python) name our side's commands; ONLY=grpo
# runs the GRPO runs alone (ours grpo and grpo_nokl, TRL GRPO with both betas), for a GRPO change.
set -euo pipefail
model=$(realpath "$1")
out=${2:-bench/trl/results/rl_25m}
rounds=${3:-3}
iterations=${4:-3}
rlhf=${RLHF:-.venv/bin/rlhf}
python=${PYTHON:-.venv/bin/python}
prompts=${TMPDIR:-/tmp}/bench_prompts_$(basename "$model")
only=${ONLY:-}
variants=(--variant ppo --variant grpo --variant grpo_nokl)
[[ $only == grpo ]] && variants=(--variant grpo --variant grpo_nokl)
mkdir -p "$out"
out=$(realpath "$out")
$python bench/trl/make_prompts.py "$prompts.jsonl" $((32 * (iterations + 1))) --model "$model" > /dev/null
$python bench/trl/make_prompts.py "${prompts}8.jsonl" $((8 * (iterations + 1))) --model "$model" > /dev/null
trl=(--warmup 1 --iterations "$iterations")
for i in $(seq 1 "$rounds"); do
  uptime > "$out/load_$i.txt"
  $rlhf bench ppo --model "$model" --iterations "$iterations" "${variants[@]}" --out "$out/ours_$i.json"
  uptime >> "$out/load_$i.txt"
  if [[ $only != grpo ]]; then
    (cd bench/trl && /tmp/trl112/bin/python trl_ppo_bench.py "$prompts.jsonl" "$out/trl_ppo_$i.json" "${trl[@]}")
    uptime >> "$out/load_$i.txt"
  fi
  (cd bench/trl && /tmp/trlvenv/bin/python trl_grpo_bench.py "${prompts}8.jsonl" "$out/trl_grpo_$i.json" "${trl[@]}")
  uptime >> "$out/load_$i.txt"
  (cd bench/trl && /tmp/trlvenv/bin/python trl_grpo_bench.py "${prompts}8.jsonl" "$out/trl_grpo_beta_$i.json" \
    "${trl[@]}" --beta 0.05)
  uptime >> "$out/load_$i.txt"
done
