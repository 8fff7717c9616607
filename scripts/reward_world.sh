#!/usr/bin/env bash
# The reward model of issue #4's acceptance on the bundled world, in two stages:
# 1. preference-model pretraining (Askell et al. 2021) on label-free pairs from the world's dialogue corpus:
#    each dialogue's own response preferred to another dialogue's response to a different prompt of the same
#    request kind (question, task, chitchat, risky: a property of the prompt, not a quality label);
# 2. fine-tuning on 2,000 helpfulness + 1,000 harmlessness labels of the default simulated panel.
# Then the helpful head's accuracy against the hidden gold ordering on 2,000 new gold-ordered pairs.
# Usage: scripts/reward_world.sh [RUN_DIR] [SEED]   (SEED of the fine-tuning; about 10 minutes on 2 CPU
# cores with the world cached)
set -euo pipefail
run_dir=${1:-runs/reward_world}
seed=${2:-0}
rlhf=.venv/bin/rlhf
mkdir -p "$run_dir"
$rlhf world export responses --n 14000 --seed 5 --out "$run_dir/corpus.jsonl"
$rlhf reward pmp-pairs --data "$run_dir/corpus.jsonl" --out "$run_dir/pmp_pairs.jsonl" --group-field request_kind
$rlhf reward train --data "$run_dir/pmp_pairs.jsonl" --out "$run_dir/pmp" \
  --set reward.epochs=5 --set reward.eval_every=0 --set reward.gold_eval=false --set run.progress=false
$rlhf world export pairs --judge panel --n 2000 --seed 11 --out "$run_dir/helpful.jsonl"
$rlhf world export pairs --judge panel --objective harmless --n 1000 --seed 12 --out "$run_dir/harmless.jsonl"
cat "$run_dir/helpful.jsonl" "$run_dir/harmless.jsonl" > "$run_dir/labels.jsonl"
$rlhf reward train --data "$run_dir/labels.jsonl" --model "$run_dir/pmp" --out "$run_dir/reward_model" \
  --seed "$seed" --set reward.lr=3e-4 --set run.progress=false
$rlhf world export pairs --judge gold --n 2000 --seed 99 --out "$run_dir/gold_test.jsonl"
echo "-- helpful head against the gold ordering, 2,000 new corpus pairs:"
$rlhf reward eval --model "$run_dir/reward_model" --data "$run_dir/gold_test.jsonl" --json "$run_dir/gold_test_eval.json"
