#!/usr/bin/env bash
# Small local check on a CPU (no GPU): the CPU build of vLLM from scripts/setup_vllm.sh serving an export
# of a tiny model through the package's launcher (mllmdr_core/backends/vllm_plugin/serve.py), the plugin
# taken from this source tree. The tests start it the same way (serve.LocalServer).
#   deploy/vllm/cpu-check.sh /path/to/export [port] [plugin|maa|embeds]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup_vllm.sh
MODEL_DIR=${1:?export dir (python -m mllmdr_core.backends.merge BUNDLE OUT --plugin)}
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} \
exec .venv-vllm/bin/python -m mllmdr_core.backends.vllm_plugin.serve "$MODEL_DIR" \
  --mode "${3:-plugin}" --served-model-name "${SERVED_NAME:-mllmdr}" --dtype float32 --max-model-len 1024 \
  --host 127.0.0.1 --port "${2:-8000}" --quick-start --source-root . --work var/vllm-cpu-check
