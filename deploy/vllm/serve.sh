#!/usr/bin/env bash
# Launch vLLM for MLlm-DR on a GPU node (image deploy/vllm/Dockerfile: vLLM + this package, so vLLM
# loads the plugin through its entry point). The flags come from the package's one launcher,
# mllmdr_core/backends/vllm_plugin/serve.py (server_command), for the chosen MODE:
#   plugin  generation: item text + 32+32 soft tokens as multimodal embeddings (MLLMDR_LLM_BACKEND=vllm-native)
#   maa     the pooling variant on the same export: the MAA score, one number per item (MLLMDR_VLLM_MAA_URL)
#   embeds  the older path: whole prompt embeddings, prefix caching off (MLLMDR_LLM_BACKEND=vllm)
#
#   MODEL_DIR=/models/mllmdr MODE=plugin SERVED_NAME=mllmdr deploy/vllm/serve.sh
#
# MODEL_DIR: `python -m mllmdr_core.backends.merge BUNDLE OUT --plugin --dtype bfloat16` (LoRA merged:
# LoRA + embeddings crash vLLM under concurrency). --max-model-len 4096: item prompts are <= 1,536 text
# + 64 soft + 96 new tokens. GPU_MEMORY_UTILIZATION: this server's share of the GPU (two servers on one
# GPU: e.g. 0.55 + 0.35; docs/deploy.md §4). Never exposed to clients (NetworkPolicy / compose network).
# Health: GET /health; deploy/vllm/healthcheck.sh also checks /v1/models lists SERVED_NAME.
set -euo pipefail
exec python3 -m mllmdr_core.backends.vllm_plugin.serve "${MODEL_DIR:?set MODEL_DIR to the export dir}" \
  --mode "${MODE:-plugin}" \
  --served-model-name "${SERVED_NAME:-mllmdr}" \
  --dtype bfloat16 \
  --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
  -- \
  --max-num-seqs "${MAX_NUM_SEQS:-256}" \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.90}" \
  ${VLLM_EXTRA_ARGS:-}
