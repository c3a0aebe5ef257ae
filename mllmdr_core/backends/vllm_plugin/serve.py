"""How to start vLLM with the plugin (no vLLM import): command line, environment, entry-point metadata,
and :class:`LocalServer`, a server subprocess for tests and benches.

In a deployment the package is installed into vLLM's environment (``pip install --no-deps mllmdr-live``),
which puts its ``vllm.general_plugins`` entry point (``pyproject.toml``) in front of every vLLM process.
From a source tree without installing into vLLM's venv (tests, benches), :func:`write_entry_point` writes
the same entry point as a bare ``*.dist-info`` folder; with that folder and the source root on
``PYTHONPATH`` (:func:`server_env`) vLLM's plugin loader finds it through ``importlib.metadata``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from mllmdr_core.backends.vllm_plugin import MAA_ARCHITECTURE

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
    maa: bool = False,
    prefix_block_size: int | None = 32,
) -> list[str]:
    """The OpenAI-compatible server for a ``plugin=True`` export: soft tokens as multimodal embeddings;
    ``maa``: the pooling variant serving the MAA score (``/v1/embeddings``, one number per item).

    The generation server caches prefixes in blocks of ``prefix_block_size`` tokens (None: vLLM's
    default, 128 on CPU; only full blocks are shared): with shared-prefix prompts
    (``assess.shared_prefix_prompts``) the 8 items of an assessment prefill the common part (soft
    tokens, scale, reply format) once. The pooling server cannot: its head pools every position."""
    if not maa and prefix_block_size is not None:
        extra = ["--enable-prefix-caching", "--block-size", str(prefix_block_size), *extra]
    if maa:
        extra = [
            "--runner", "pooling", "--hf-overrides", json.dumps({"architectures": [MAA_ARCHITECTURE]}),
            "--no-enable-chunked-prefill", "--no-enable-prefix-caching",  # the head pools every position
            "--max-num-batched-tokens", str(max_model_len * 8), *extra,
        ]  # fmt: skip
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", served_model_name, "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--host", host, "--port", str(port), "--enable-mm-embeds",
        "--limit-mm-per-prompt", '{"audio": 1, "video": 1}', *extra,
    ]  # fmt: skip


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A vLLM server subprocess with the plugin, from a source tree (tests, benches, local checks).

    Starts ``server_command`` in its own process group with the entry point written under ``work``,
    waits for ``/health`` (``RuntimeError`` with the log's tail if it exits or is not ready in
    ``ready_s``); :meth:`stop` is idempotent.
    """

    def __init__(
        self,
        python: str | Path,
        model_dir: str | Path,
        work: str | Path,
        *,
        source_root: str | Path,
        served_model_name: str,
        maa: bool = False,
        ready_s: float = 420.0,
        port: int | None = None,
    ) -> None:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()  # a given port: e.g. a restart where the last one listened
        self.url = f"http://127.0.0.1:{self.port}"
        env = server_env(
            os.environ,
            source_root=source_root,
            entry_point_dir=write_entry_point(work / "entry_point"),
            cache_dir=work / "cache",
        )
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in-process: faster start on small CPUs
        cmd = server_command(
            python, model_dir, port=self.port, served_model_name=served_model_name, maa=maa,
            extra=["--enforce-eager", "--distributed-executor-backend", "uni"],
        )  # fmt: skip
        self.log = work / "server.log"
        self._log_f = self.log.open("wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log_f, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.start_s = 0.0
        self._wait(t0, ready_s)

    def _wait(self, t0: float, ready_s: float) -> None:
        while time.perf_counter() < t0 + ready_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.start_s = time.perf_counter() - t0
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM not ready after {ready_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL to the server's process group (a crash, for tests); :meth:`stop` still closes the log."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the server's own process group, SIGKILL after 20 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._log_f.closed:
            self._log_f.close()
