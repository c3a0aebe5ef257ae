"""Batch replay on more than one machine: the same ``run_batch`` over a Dask cluster.

Dask (``pip install "dask[distributed]"``, the ``cluster`` extra) is optional; nothing here is a
scheduler of our own. ``run_batch`` submits one task per session to ``Client.get_executor()``; each
Dask worker process loads the bundle once (on its first session) and keeps it for the next ones, writes
``OUT/<session_id>/`` exactly as a local batch does (``assessment.json`` last: the resume marker), and
the caller writes ``summary.csv``, ``failures.csv`` and the evaluation when all are back. Rerunning
skips finished sessions. The bundle and the recordings must be at the same paths on every machine and
``OUT`` on a shared file system (NFS, a mounted bucket), as for any Dask job reading files.

On a cluster::

    dask scheduler                                   # one machine
    dask worker tcp://SCHEDULER:8786 --nworkers 2 --nthreads 1   # each machine: a process per core

    from client_sdk.batch_cluster import run_batch_on_dask
    run_batch_on_dask("tcp://SCHEDULER:8786", "bundles/demo", "/shared/recordings", "/shared/out")

``tests/sdk/test_batch_cluster.py`` runs it on a local cluster of 2 worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client_sdk.batch import BatchOptions, BatchResult, run_batch
from client_sdk.replay import ReplayOptions
from mllmdr_core.errors import ConfigError
from mllmdr_core.media import find_sources


def run_batch_on_dask(
    scheduler: Any,
    bundle: str | Path,
    recordings: str | Path,
    out_dir: str | Path,
    *,
    replay: ReplayOptions | None = None,
    resume: bool = True,
    report: bool = True,
    labels: Path | None = None,
) -> BatchResult:
    """Replay every recording under ``recordings`` on the Dask cluster ``scheduler`` (an address or a
    ``distributed.Client``) into ``out_dir``; same outputs and resume rule as ``run_batch``."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError('batch replay on Dask needs: pip install "dask[distributed]"') from exc
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        options = BatchOptions(
            out_dir=Path(out_dir),
            resume=resume,
            report=report,
            labels=labels,
            replay=replay or ReplayOptions(),
            torch_threads=1,  # a Dask worker process per core
            executor=client.get_executor(pure=False),
        )
        return run_batch(bundle, find_sources(recordings), options, progress=False)
    finally:
        if client is not scheduler:
            client.close()
