"""The one vLLM launcher (no vLLM import): command line (:func:`server_command`, ``mode`` plugin / maa /
embeds), environment, entry-point metadata; :class:`LocalServer`, a server subprocess for tests and
benches; ``python -m mllmdr_core.backends.vllm_plugin.serve`` (:func:`main`) for deploy/ and by hand.

In a deployment the package is installed into vLLM's environment (``pip install --no-deps mllmdr-live``),
which puts its ``vllm.general_plugins`` entry point (``pyproject.toml``) in front of every vLLM process.
From a source tree without installing into vLLM's venv (tests, benches), :func:`write_entry_point` writes
the same entry point as a bare ``*.dist-info`` folder; with that folder and the source root on
``PYTHONPATH`` (:func:`server_env`) vLLM's plugin loader finds it through ``importlib.metadata``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import httpx

from mllmdr_core.backends.vllm_plugin import MAA_ARCHITECTURE

# vllm_plugin.grounded.PROCESSOR (that module imports vLLM, this one must not)
GROUNDED_PROCESSOR = "mllmdr_core.backends.vllm_plugin.grounded:GroundedLogitsProcessor"
GROUNDED_ARG = "mllmdr_grounded"  # vllm_xargs key: ground this request (any true value)
PROBE_ARG = "mllmdr_grounded_probe"  # vllm_xargs key: force these token ids (the client's check)
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


ServeMode = Literal["plugin", "maa", "embeds"]
SERVE_MODES: tuple[ServeMode, ...] = ("plugin", "maa", "embeds")
# Start-up flags for small CPUs (tests, benches, cpu checks): no torch.compile (~60 s less), one process.
QUICK_START_ARGS = ("--enforce-eager", "--distributed-executor-backend", "uni")
QUICK_START_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # engine in-process


def server_command(
    python: str | Path,
    model_dir: str | Path,
    *,
    port: int,
    served_model_name: str,
    mode: ServeMode = "plugin",
    dtype: str = "float32",
    max_model_len: int = 1024,
    host: str = "127.0.0.1",
    quick_start: bool = False,
    extra: Sequence[str] = (),
    prefix_block_size: int | None = 32,
    grounded: bool = False,
) -> list[str]:
    """vLLM's OpenAI-compatible server for an export of :func:`~mllmdr_core.backends.merge.export_merged_llm`.

    ``mode``: ``"plugin"`` (a ``plugin=True`` export: item text + soft tokens as multimodal embeddings),
    ``"maa"`` (the same export as the pooling variant serving the MAA score on ``/v1/embeddings``, one
    number per item) or ``"embeds"`` (a plain merged export for ``VLLMBackend``: whole prompt embeddings,
    prefix caching off). ``quick_start`` adds :data:`QUICK_START_ARGS`; ``extra`` goes last (e.g.
    ``--gpu-memory-utilization``).

    The generation server (``"plugin"``) caches prefixes in blocks of ``prefix_block_size`` tokens (None:
    vLLM's default, 128 on CPU; only full blocks are shared): with shared-prefix prompts
    (``assess.shared_prefix_prompts``) the 8 items of an assessment prefill the common part (soft tokens,
    scale, reply format) once. The pooling server cannot: its head pools every position.

    ``grounded`` (``"plugin"`` only): register the grounded-decoding logits processor
    (:mod:`~mllmdr_core.backends.vllm_plugin.grounded`) for bundles with ``assess.grounded_decoding``.
    """
    if mode == "plugin":
        flags = ["--enable-mm-embeds", "--limit-mm-per-prompt", '{"audio": 1, "video": 1}']
        if prefix_block_size is not None:
            flags += ["--enable-prefix-caching", "--block-size", str(prefix_block_size)]
    elif mode == "maa":
        flags = [
            "--enable-mm-embeds", "--limit-mm-per-prompt", '{"audio": 1, "video": 1}',
            "--runner", "pooling", "--hf-overrides", json.dumps({"architectures": [MAA_ARCHITECTURE]}),
            "--no-enable-chunked-prefill", "--no-enable-prefix-caching",  # the head pools every position
            "--max-num-batched-tokens", str(max_model_len * 8),
        ]  # fmt: skip
    elif mode == "embeds":  # prefix caching with embeds had bugs, and spliced embeds share no prefix
        flags = ["--enable-prompt-embeds", "--no-enable-prefix-caching"]
    else:
        raise ValueError(f"mode must be one of {SERVE_MODES}, got {mode!r}")
    if grounded:
        if mode != "plugin":
            raise ValueError("grounded decoding is served in the plugin mode only")
        flags += ["--logits-processors", GROUNDED_PROCESSOR]
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", served_model_name, "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--host", host, "--port", str(port), *flags, *(QUICK_START_ARGS if quick_start else ()), *extra,
    ]  # fmt: skip


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A vLLM server subprocess from a source tree (tests, benches, local checks): :func:`server_command`
    (``quick_start`` by default: small CPUs; a GPU bench passes ``quick_start=False``, ``dtype``,
    ``max_model_len`` and ``extra`` such as ``--gpu-memory-utilization``), the plugin's entry point written
    under ``work`` (:func:`server_env`).

    Runs in its own process group on ``port`` (default: a free loopback port), waits for ``/health``
    (``RuntimeError`` with the log's tail if it exits or is not ready in ``ready_s``); :meth:`stop` is
    idempotent.
    """

    def __init__(
        self,
        python: str | Path,
        model_dir: str | Path,
        work: str | Path,
        *,
        source_root: str | Path,
        served_model_name: str,
        mode: ServeMode = "plugin",
        port: int | None = None,
        ready_s: float = 420.0,
        quick_start: bool = True,
        dtype: str = "float32",
        max_model_len: int = 1024,
        extra: Sequence[str] = (),
        grounded: bool = False,
    ) -> None:
        if not Path(python).exists():
            raise RuntimeError(f"{python} missing: run scripts/setup_vllm.sh (make test does)")
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
        cmd = server_command(
            python, model_dir, port=self.port, served_model_name=served_model_name, mode=mode,
            quick_start=quick_start, dtype=dtype, max_model_len=max_model_len, extra=extra, grounded=grounded,
        )  # fmt: skip
        self.log = work / "server.log"
        self._log_f = self.log.open("wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env={**env, **(QUICK_START_ENV if quick_start else {})}, stdout=self._log_f,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The launcher's arguments (``MODEL_DIR --mode … [-- more vLLM arguments]``); ``extra`` holds what
    follows ``--``. ``deploy/`` calls the launcher with these (tests/scale/test_deploy.py parses them)."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m mllmdr_core.backends.vllm_plugin.serve")
    parser.add_argument("model_dir")
    parser.add_argument("--mode", choices=SERVE_MODES, default="plugin")
    parser.add_argument("--served-model-name", default="mllmdr")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--quick-start", action="store_true", help="small-CPU start-up flags (no compile)")
    parser.add_argument(
        "--grounded-decoding", action="store_true", help="for bundles with assess.grounded_decoding (plugin)"
    )
    parser.add_argument("--source-root", help="run the plugin from this source tree (not installed)")
    parser.add_argument("--work", default="var/vllm", help="entry point + cache dir for --source-root")
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]
    return args


def launch_command(args: argparse.Namespace, python: str | Path) -> list[str]:
    """:func:`server_command` for parsed launcher arguments."""
    return server_command(
        python, args.model_dir, port=args.port, served_model_name=args.served_model_name, mode=args.mode,
        dtype=args.dtype, max_model_len=args.max_model_len, host=args.host, quick_start=args.quick_start,
        extra=args.extra, grounded=args.grounded_decoding,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mllmdr_core.backends.vllm_plugin.serve MODEL_DIR --mode plugin|maa|embeds [-- VLLM ARGS]``:
    exec vLLM (this interpreter) with :func:`server_command`; the launcher of ``deploy/`` and the CPU check.

    ``--source-root``: the package is not installed in this environment; write its entry point under
    ``--work`` and put both on ``PYTHONPATH`` (:func:`server_env`), as :class:`LocalServer` does.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cmd = launch_command(args, sys.executable)
    env = dict(os.environ)
    if args.source_root:
        work = Path(args.work).resolve()
        env = server_env(
            env, source_root=Path(args.source_root).resolve(),
            entry_point_dir=write_entry_point(work / "entry_point"), cache_dir=work / "cache",
        )  # fmt: skip
    if args.quick_start:
        env.update(QUICK_START_ENV)
    print(shlex.join(cmd), flush=True)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
