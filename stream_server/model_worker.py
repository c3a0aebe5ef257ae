"""The model off the ingest path: checkpoints and finals run in one worker process per server process.

In the server's own threads an assessment (LQ-formers, LLM prefill and generation) competes with ingest
(VAD, HuBERT, face tracker) for the GIL and, through torch's intra-op threads, for the cores. Here the
bundle's ``Assessor`` is loaded once in a spawned process (without the audio encoder: it never encodes),
at a lower CPU priority (``nice``) with its own torch thread count, and is fed
``SessionSnapshot.to_bytes()``. The queue is bounded by the callers: the
services' ``assess_slots`` let one assessment at a time into the worker, the rest wait on the event loop.

If the worker dies (killed, out of memory), the call raises :class:`ModelWorkerError` (a ``BackendError``,
so ``assess_with_retry`` retries it and a final that still fails is parked as ``pending``) and the next
call spawns a fresh worker. The worker exits with its server process, also after the server's kill -9.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import BackendError
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.asr import _exit_with_parent

_assessor: Any = None  # the worker process's Assessor


class ModelWorkerError(BackendError):
    """The model worker process died during an assessment; the next call starts a new one."""


def _init_worker(parent_pid: int, bundle_path: str, torch_threads: int, nice: int) -> None:
    """Worker initializer: exit with the server, lower priority, torch threads, load the bundle once."""
    global _assessor
    _exit_with_parent(parent_pid)
    if nice:
        os.nice(nice)
    import torch

    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle

    torch.set_num_threads(torch_threads)
    # it assesses snapshots (features already computed): no audio encoder (HuBERT-base: ~370 MB of weights)
    _assessor = Assessor(load_bundle(Path(bundle_path), audio_encoder=False))


def _assess_in_worker(data: bytes, session_id: str, kind: Literal["checkpoint", "final"]) -> Assessment:
    snapshot = SessionSnapshot.from_bytes(data, where="the server's snapshot")
    result: Assessment = _assessor.assess(snapshot, session_id=session_id, kind=kind)
    return result


def _worker_pid() -> int:
    return os.getpid()


class ModelWorker:
    """One assessment process for a bundle: spawned on first use (or :meth:`warm`), respawned if it dies."""

    def __init__(self, bundle_path: str | Path, *, torch_threads: int = 1, nice: int = 5) -> None:
        self.bundle_path = str(bundle_path)
        self.torch_threads = torch_threads
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise BackendError("the model worker is shut down")
            if self._pool is None:
                # spawn: forking a process that runs aiortc and torch threads is unsafe
                self._pool = ProcessPoolExecutor(
                    1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(), self.bundle_path, self.torch_threads, self.nice),
                )
            return self._pool

    def assess(
        self, snapshot: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment:
        """Blocks the calling thread (not the GIL) until the worker answers."""
        pool = self._get()
        try:
            result: Assessment = pool.submit(
                _assess_in_worker, snapshot.to_bytes(), session_id, kind
            ).result()
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise ModelWorkerError(
                f"the model worker process died ({exc}); it restarts with the next assessment"
            ) from exc
        return result

    def warm(self) -> None:
        """Start the process and load the bundle now, in the background (the first checkpoint then does
        not wait for them)."""
        self._get().submit(_worker_pid)

    def pid(self) -> int:
        """The worker's process id (starts it if needed; waits for the bundle to load)."""
        pool = self._get()
        try:
            return int(pool.submit(_worker_pid).result())
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise ModelWorkerError(f"the model worker process died ({exc})") from exc

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Idempotent: stop the worker process (an assessment under way is finished first)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
