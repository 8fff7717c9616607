#!/usr/bin/env bash
# KTO on the bundled world from binary feedback: one sample of the initial policy per prompt, judged
# thumbs up or down by a labeller of the simulated panel (no gold: `Labeller.judge`, via
# src/rlhf/world/binary.py), then gold helpfulness and KL before/after on 256 new prompts.
# Usage: scripts/kto_world.sh [RUN_DIR]   (about 3 minutes on 2 quiet CPU cores with the world cached)
set -euo pipefail
run_dir=${1:-runs/kto_world}
venv=${VENV:-.venv}
rlhf=$venv/bin/rlhf
mkdir -p "$run_dir"
$venv/bin/python -m rlhf.world.binary --model world --n 2000 --seed 21 --out "$run_dir/binary.jsonl"
# about 47% thumbs up: lambda_U = 0.8 puts lambda_D n_D / (lambda_U n_U) at ~1.1, inside the paper's [1, 4/3]
$rlhf kto train --data "$run_dir/binary.jsonl" --out "$run_dir/policy" --set kto.undesirable_weight=0.8 \
  --set run.progress=false "${@:2}"
echo "-- initial policy:"
$rlhf world sample --model world --reference world --n 256 --seed 123 | sed -n '/mean helpfulness/,$p'
echo "-- after KTO:"
$rlhf world sample --model "$run_dir/policy" --reference world --n 256 --seed 123 | sed -n '/mean helpfulness/,$p'
