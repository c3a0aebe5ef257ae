#!/usr/bin/env bash
# Usage: check_disk.sh GIB WHAT — fail early, with a clear message, when the disk under the repository has
# less than GIB GiB free for WHAT (pip's own "No space left on device" comes minutes later, half-installed).
set -euo pipefail
need_gib=$1
what=$2
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
free_gib=$(awk -v k="$free_kib" 'BEGIN {printf "%.1f", k / 1048576}')
if awk -v k="$free_kib" -v g="$need_gib" 'BEGIN {exit !(k < g * 1048576)}'; then
  echo "[setup] not enough disk for $what: ${free_gib} GiB free under $(pwd), about ${need_gib} GiB needed." >&2
  echo "[setup] Free some space (or set MLLMDR_SKIP_VLLM=1 to leave out the vLLM server test's venv)." >&2
  exit 28
fi
echo "[setup] disk: ${free_gib} GiB free for $what (about ${need_gib} GiB needed)"
