#!/usr/bin/env bash
# Small local check on a CPU (no GPU): the CPU build of vLLM from scripts/setup_vllm.sh serving an
# export of a tiny model. The test tests/core/backends/test_vllm_backend.py starts it the same way.
#   deploy/vllm/cpu-check.sh /path/to/merged-export [port]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup_vllm.sh
MODEL_DIR=${1:?merged export dir}
PORT=${2:-8000}
VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
exec .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" --served-model-name "${SERVED_NAME:-mllmdr}" \
  --enable-prompt-embeds --no-enable-prefix-caching --dtype float32 --max-model-len 1024 \
  --enforce-eager --distributed-executor-backend uni --host 127.0.0.1 --port "$PORT"
