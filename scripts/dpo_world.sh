#!/usr/bin/env bash
# DPO on the bundled world from a logged dataset: two samples of the initial policy per prompt, compared
# by the simulated labeller panel (no gold), then gold helpfulness and KL before/after on 256 new prompts.
# Usage: scripts/dpo_world.sh [RUN_DIR]   (about 3 minutes on 2 CPU cores with the world cached)
set -euo pipefail
run_dir=${1:-runs/dpo_world}
rlhf=.venv/bin/rlhf
mkdir -p "$run_dir"
$rlhf world export pairs --judge panel --model world --n 2000 --seed 21 --out "$run_dir/pairs.jsonl"
$rlhf dpo train --data "$run_dir/pairs.jsonl" --out "$run_dir/policy" --set run.progress=false
echo "-- initial policy:"
$rlhf world sample --model world --reference world --n 256 --seed 123 | sed -n '/mean helpfulness/,$p'
echo "-- after DPO:"
$rlhf world sample --model "$run_dir/policy" --reference world --n 256 --seed 123 | sed -n '/mean helpfulness/,$p'
