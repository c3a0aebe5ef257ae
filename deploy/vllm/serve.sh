#!/usr/bin/env bash
# Launch vLLM for MLlm-DR on a GPU node: the model exported by `python -m mllmdr_core.backends.merge`
# (LoRA merged into the base weights), prompt embeddings on, prefix caching off.
#
#   MODEL_DIR=/models/mllmdr-merged SERVED_NAME=mllmdr deploy/vllm/serve.sh
#
# Why these flags (docs/deploy.md has the long form):
#   --enable-prompt-embeds        the stream server sends spliced embeddings (text + 32+32 soft tokens)
#   no --enable-lora              LoRA + prompt embeds crashes vLLM under concurrency: serve merged weights
#   --no-enable-prefix-caching    prefix caching over mixed embeds had bugs, and embeds never share prefixes
#   --max-model-len 4096          item prompts are <= 1,536 text tokens + 64 soft tokens + 96 new tokens
#   --gpu-memory-utilization 0.90 8B bf16 = 16 GB weights; the rest is KV cache (~0.13 MB/token for 8B)
#   --host 0.0.0.0 inside a private network only: vLLM is never exposed to clients (NetworkPolicy /
#                                 compose network); the stream servers are its only callers
# Health: GET /health (200 when the engine is up); model list: GET /v1/models.
set -euo pipefail
MODEL_DIR=${MODEL_DIR:?set MODEL_DIR to the merged export dir}
SERVED_NAME=${SERVED_NAME:-mllmdr}
PORT=${PORT:-8000}
exec python3 -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" \
  --served-model-name "$SERVED_NAME" \
  --enable-prompt-embeds \
  --no-enable-prefix-caching \
  --dtype bfloat16 \
  --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --max-num-seqs "${MAX_NUM_SEQS:-256}" \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.90}" \
  --host "${HOST:-0.0.0.0}" --port "$PORT" \
  ${VLLM_EXTRA_ARGS:-}
