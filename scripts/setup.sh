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
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.mllmdr-install-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  # The CPU wheel of torch lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[server,train,dev]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: .venv ($(.venv/bin/python --version))"
