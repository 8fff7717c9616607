#!/usr/bin/env bash
# ILQL on the bundled world from a logged dataset: 2,000 samples of the initial policy scored by a reward
# model (no gold), then gold helpfulness and KL of the steered policy on 256 new prompts.
# Usage: scripts/ilql_world.sh [REWARD_MODEL_DIR] [RUN_DIR]
#   REWARD_MODEL_DIR defaults to runs/pipeline/reward_model (`scripts/pipeline.sh` trains it).
set -euo pipefail
reward_model=${1:-runs/pipeline/reward_model}
run_dir=${2:-runs/ilql_world}
rlhf=.venv/bin/rlhf
mkdir -p "$run_dir"
$rlhf world export responses --model world --n 2000 --seed 31 --out "$run_dir/logged.jsonl"
$rlhf reward score --model "$reward_model" --data "$run_dir/logged.jsonl" --out "$run_dir/scored.jsonl"
$rlhf ilql train --data "$run_dir/scored.jsonl" --set ilql.reward_field=score --out "$run_dir/model" --set run.progress=false
echo "-- initial policy:"
$rlhf world sample --model world --reference world --n 256 --seed 123 | sed -n '/mean helpfulness/,$p'
for beta in 1 2 4; do
  echo "-- ILQL, beta $beta:"
  $rlhf ilql generate --model "$run_dir/model" --beta "$beta" --n 256 --seed 123 --reference world | sed -n '/mean helpfulness/,$p'
done
