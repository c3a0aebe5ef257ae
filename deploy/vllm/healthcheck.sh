#!/usr/bin/env bash
# Health check for the vLLM container: the engine answers /health and serves the expected model name.
set -euo pipefail
PORT=${PORT:-8000}
SERVED_NAME=${SERVED_NAME:-mllmdr}
curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null
curl -fsS "http://127.0.0.1:${PORT}/v1/models" | grep -q "\"id\":\"${SERVED_NAME}\""
