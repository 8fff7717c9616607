#!/usr/bin/env bash
# The GPU check of issue #19 (docs/parallel.md, "The GPU check"): reward-model training, DPO and GRPO on a
# random-weight Llama of about 0.5B parameters under FSDP2 and DeepSpeed ZeRO-3 on one GPU. Prints each
# run's throughput, peak GPU memory and parameters held, and checks that every output loads in plain
# transformers. About 6 minutes on one H100/H200 (at most 8: each run is cut at 100 s).
#
#   scripts/gpu_check.sh prepare     # where pip and the built world are: .gpu_check/ (wheels, data, tokenizer)
#   scripts/gpu_check.sh run [OUT]   # on the GPU machine, .gpu_check/ in the checkout; figures in OUT
#                                    # (default .gpu_check/out): gpu_check.json and the table on stdout
#   GPU_CHECK_SMOKE=1 scripts/gpu_check.sh run   # the same steps on CPUs: a tiny Llama, 2 processes
# Environment: PYTHON (default python3; .venv/bin/python for the smoke run), CONFIGS (default
# "fsdp2 zero3"), NPROC (processes per run: 1 on one GPU, 2 for the smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.gpu_check

prepare() {
  local py=.venv/bin/python
  mkdir -p "$dir/wheels"
  # What the GPU image lacks (it has torch, transformers, accelerate, peft, typer, rich, ...): pydantic and
  # its parts, dill, and DeepSpeed (pure Python when its ops are not prebuilt: they compile on first use)
  local pins=()
  for name in pydantic pydantic-core annotated-types typing-inspection dill hjson; do
    pins+=("$name==$($py -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)")
  done
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir/wheels" "${pins[@]/%==/}"
  DS_BUILD_OPS=0 $py -m pip wheel -q --no-deps -w "$dir/wheels" "deepspeed==${DEEPSPEED_VERSION:-0.19.8}"
  .venv/bin/rlhf world export pairs --judge gold --n 1024 --seed 1 --out "$dir/pairs.jsonl"
  .venv/bin/rlhf world export prompts --n 256 --seed 2 --out "$dir/prompts.jsonl"
  $py -c "
from transformers import AutoTokenizer
from rlhf.world.report import resolve_world_model
AutoTokenizer.from_pretrained(resolve_world_model('world', None, False)).save_pretrained('$dir/tokenizer')"
  du -sh "$dir"
}

run() {
  local out=${1:-$dir/out} smoke=${GPU_CHECK_SMOKE:-0}
  local py=${PYTHON:-python3} configs=${CONFIGS:-fsdp2 zero3} nproc=${NPROC:-1} size=0.5b
  local reward_steps=40 dpo_steps=30 grpo_steps=6 grpo_batch=32 limit=100
  if [ "$smoke" = 1 ]; then
    py=${PYTHON:-.venv/bin/python} configs=${CONFIGS:-fsdp2 zero3} nproc=${NPROC:-2} size=tiny
    reward_steps=4 dpo_steps=4 grpo_steps=2 grpo_batch=8 limit=300
  fi
  [ -f "$dir/pairs.jsonl" ] || { echo "no $dir/pairs.jsonl: run scripts/gpu_check.sh prepare first" >&2; exit 2; }
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
  local needs="import pydantic, dill"
  [[ $configs == *zero* ]] && needs="$needs, deepspeed"
  if ! $py -c "$needs" 2>/dev/null && ls "$dir"/wheels/*.whl >/dev/null 2>&1; then
    $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site "$dir"/wheels/*.whl
    export PYTHONPATH=$PYTHONPATH:/tmp/gpu_check_site
  fi
  mkdir -p "$out"
  local work=/tmp/gpu_check_runs model=/tmp/gpu_check_model
  rm -rf "$work" && mkdir -p "$work"
  $py -c "
import torch, transformers, accelerate
try:
    import deepspeed; ds = deepspeed.__version__
except Exception as error:
    ds = f'not importable ({type(error).__name__})'
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
print(f'torch {torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, deepspeed {ds}; GPU: {gpu}')"
  [ -d "$model" ] || $py scripts/gpu_check.py model "$model" --tokenizer "$dir/tokenizer" --size "$size"
  local launch=("$py" -m accelerate.commands.launch --num_processes "$nproc")
  local common=(--set run.progress=false --set run.tensorboard=false)
  for config in $configs; do
    local cfg=(--config_file "configs/accelerate/$config.yaml")
    attempt() {  # attempt NAME ARGS...: one run, cut at $limit s; its status next to its logs
      local name=$1; shift
      mkdir -p "$work/$name"
      echo "== $name: $*"
      if timeout "$limit" "${launch[@]}" "${cfg[@]}" -m rlhf "$@" --out "$work/$name" "${common[@]}" \
        >"$work/$name.log" 2>&1; then
        echo ok >"$work/$name/status"
      else
        echo "failed (rc $?)" >"$work/$name/status"
        tail -n 5 "$work/$name.log"
      fi
      cat "$work/$name/status"
    }
    attempt "reward_$config" reward train --data "$dir/pairs.jsonl" --model "$model" \
      --set reward.max_steps=$reward_steps --set reward.stop_after_steps=$reward_steps --set reward.batch_size=32 \
      --set reward.eval_every=0 --set reward.gold_eval=false --set reward.keep_best=false
    attempt "dpo_$config" dpo train --data "$dir/pairs.jsonl" --model "$model" \
      --set dpo.max_steps=$dpo_steps --set dpo.batch_size=16 --set dpo.eval_every=0
    local rm="$work/reward_$config"
    [ -f "$rm/config.json" ] || rm="$work/reward_${configs%% *}"  # another config's, if this one failed
    attempt "grpo_$config" ppo train --policy "$model" --reward "$rm" --prompts "$dir/prompts.jsonl" \
      --set ppo.advantage=grpo --set ppo.samples_per_prompt=4 --set ppo.steps=$grpo_steps \
      --set ppo.batch_size=$grpo_batch --set ppo.mini_batch_size=$grpo_batch --set ppo.ppo_epochs=1 \
      --set ppo.max_new_tokens=48 --set ppo.save_every=0
  done
  echo "== each output in plain transformers"
  $py - "$work" <<'PY'
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    kind = AutoModelForSequenceClassification if run.name.startswith("reward") else AutoModelForCausalLM
    try:
        model = kind.from_pretrained(run)
        print(f"{run.name}: loads with {kind.__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    except Exception as error:  # a failed run has nothing to load: said, and the summary counts it
        print(f"{run.name}: does not load ({type(error).__name__}: {str(error)[:120]})")
        (run / "status").write_text(f"saved output does not load\n")
PY
  $py scripts/gpu_check.py summary "$work" "$out/gpu_check.json"
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu_check.sh prepare | run [OUT]" >&2; exit 2 ;;
esac
