#!/usr/bin/env bash
# The pipeline one CLI command at a time on the bundled world (`rlhf demo` runs it as a closed loop).
# Usage: scripts/pipeline.sh [RUN_DIR]   (default runs/pipeline)
set -euo pipefail
run_dir=${1:-runs/pipeline}
rlhf=.venv/bin/rlhf
mkdir -p "$run_dir"

echo "== 1. build the world: tokenizer + tiny LM pretrained on the dialogue corpus (cached) =="
$rlhf world build

echo "== 2. what the pretrained LM says, scored by the hidden gold functions =="
$rlhf world sample --n 12 --seed 1 --jsonl "$run_dir/samples.jsonl"

echo "== 3. the simulated labeller panel: agreement with gold and with each other =="
$rlhf world panel --n-pairs 400

echo "== 4. labels from the panel: 2,000 helpfulness and 1,000 harmlessness comparisons =="
$rlhf world export prompts --n 500 --out "$run_dir/prompts.jsonl"
$rlhf world export pairs --n 2000 --judge panel --seed 11 --out "$run_dir/pairs_helpful.jsonl"
$rlhf world export pairs --n 1000 --judge panel --objective harmless --seed 12 --out "$run_dir/pairs_harmless.jsonl"
cat "$run_dir/pairs_helpful.jsonl" "$run_dir/pairs_harmless.jsonl" > "$run_dir/pairs.jsonl"

echo "== 5. reward model with helpful and harmless heads (held-out prompts; gold accuracy from the hidden truth) =="
$rlhf reward train --data "$run_dir/pairs.jsonl" --out "$run_dir/reward_model"

echo "== 6. score the pretrained policy's samples and store the normalisation statistics =="
$rlhf world export responses --n 500 --model world --out "$run_dir/policy_samples.jsonl"
$rlhf reward normalize --model "$run_dir/reward_model" --samples "$run_dir/policy_samples.jsonl"
$rlhf reward score --model "$run_dir/reward_model" --data "$run_dir/policy_samples.jsonl" --out "$run_dir/policy_samples_scored.jsonl"
echo "== 7. PPO against the reward model (KL penalty to the initial policy), then gold before/after =="
$rlhf ppo train --reward "$run_dir/reward_model" --out "$run_dir/ppo_policy"
echo "-- initial policy, 256 prompts it was not trained on:"
$rlhf world sample --model world --reference world --n 256 --seed 123 --jsonl "$run_dir/eval_initial.jsonl" | sed -n '/mean helpfulness/,$p'
echo "-- after PPO, the same prompts:"
$rlhf world sample --model "$run_dir/ppo_policy" --reference world --n 256 --seed 123 --jsonl "$run_dir/eval_ppo.jsonl" | sed -n '/mean helpfulness/,$p'
echo "pipeline done: outputs in $run_dir"
