#!/usr/bin/env bash
# The end-to-end demo on the bundled world: what exists of the pipeline so far, in order.
# Usage: scripts/demo.sh [RUN_DIR]   (make demo calls it with runs/demo)
set -euo pipefail
run_dir=${1:-runs/demo}
rlhf=.venv/bin/rlhf
mkdir -p "$run_dir"

echo "== 1. build the world: tokenizer + tiny LM pretrained on the dialogue corpus (cached) =="
$rlhf world build

echo "== 2. what the pretrained LM says, scored by the hidden gold functions =="
$rlhf world sample --n 12 --seed 1 --jsonl "$run_dir/samples.jsonl"

echo "== 3. the simulated labeller panel: agreement with gold and with each other =="
$rlhf world panel --n-pairs 400

echo "== 4. export data for the next stages =="
$rlhf world export prompts --n 500 --out "$run_dir/prompts.jsonl"
$rlhf world export pairs --n 2000 --judge panel --out "$run_dir/pairs.jsonl"
$rlhf world export responses --n 500 --model world --out "$run_dir/policy_samples.jsonl"
echo "demo done: outputs in $run_dir"
