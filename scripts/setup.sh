#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh Debian machine: system packages + a local venv.
# Used by `make demo`, `make test` and `.ci/run`. Re-runs are cheap (stamp files).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng ffmpeg chromium chromium-driver postgresql sox)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  apt-get clean  # the downloaded .deb files are not needed again (CI disks can be small)
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  bash scripts/check_disk.sh 3 "the project's .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.mllmdr-install-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (first run takes a few minutes)"
  # No pip cache: the wheels are not needed again and CI disks can be small.
  .venv/bin/pip install -q --no-cache-dir --upgrade pip
  # The CPU wheel of torch lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/pip install -q --no-cache-dir torch==2.13.0
  .venv/bin/pip install -q --no-cache-dir -e ".[server,train,dev]"
  # mediapipe lists jax + jaxlib (380 MB) for its LLM-weight converter only; the face mesh never imports them.
  .venv/bin/pip uninstall -q -y jax jaxlib ml_dtypes
  echo "$want" > "$stamp"
fi
echo "[setup] ready: .venv ($(.venv/bin/python --version))"
