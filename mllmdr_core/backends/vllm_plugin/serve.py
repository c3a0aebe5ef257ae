"""How to start vLLM with the plugin (no vLLM import): command line, environment, entry-point metadata.

In a deployment the package is installed into vLLM's environment (``pip install --no-deps mllmdr-live``),
which puts its ``vllm.general_plugins`` entry point (``pyproject.toml``) in front of every vLLM process.
From a source tree without installing into vLLM's venv (tests, benches), :func:`write_entry_point` writes
the same entry point as a bare ``*.dist-info`` folder; with that folder and the source root on
``PYTHONPATH`` (:func:`server_env`) vLLM's plugin loader finds it through ``importlib.metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

ENTRY_POINT_GROUP = "vllm.general_plugins"
ENTRY_POINT = "mllmdr = mllmdr_core.backends.vllm_plugin:register"
_DIST_INFO = "mllmdr_vllm_plugin-0.1.0.dist-info"


def write_entry_point(directory: str | Path) -> Path:
    """Write the plugin's entry point as ``directory/<name>.dist-info``; returns ``directory``."""
    root = Path(directory)
    info = root / _DIST_INFO
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mllmdr-vllm-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{ENTRY_POINT}\n")
    return root


def server_env(
    base: Mapping[str, str], *, source_root: str | Path, entry_point_dir: str | Path, cache_dir: str | Path
) -> dict[str, str]:
    """``base`` plus what a CPU vLLM server needs to load the plugin from a source tree, offline."""
    path = [str(source_root), str(entry_point_dir)]
    if base.get("PYTHONPATH"):
        path.append(base["PYTHONPATH"])
    return {
        **base,
        "PYTHONPATH": ":".join(path),
        "VLLM_CPU_KVCACHE_SPACE": base.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_CACHE_ROOT": str(cache_dir),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }


def server_command(
    python: str | Path,
    model_dir: str | Path,
    *,
    port: int,
    served_model_name: str,
    dtype: str = "float32",
    max_model_len: int = 1024,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
) -> list[str]:
    """The OpenAI-compatible server for a ``plugin=True`` export: soft tokens as multimodal embeddings."""
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", served_model_name, "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--host", host, "--port", str(port), "--enable-mm-embeds",
        "--limit-mm-per-prompt", '{"audio": 1, "video": 1}', *extra,
    ]  # fmt: skip
