"""Batch replay: many recordings, parallel worker processes, resume, summary CSV and evaluation.

Each session writes ``OUT/<session_id>/`` (see ``replay_outputs.write_outputs``); ``assessment.json`` is
written last, so a session whose folder holds it is finished and is skipped on the next run
(``resume``). ``OUT/summary.csv`` lists every finished session; ``OUT/failures.csv`` the ones that
raised; with labels, ``OUT/evaluation.json`` and ``OUT/evaluation.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_sdk.labels import SessionLabel, evaluate, evaluation_markdown, normalise_id, read_labels
from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.replay_outputs import DONE_FILE, write_outputs
from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import MllmdrError
from mllmdr_core.media import MediaSource
from mllmdr_core.metrics import plot_confusion
from mllmdr_core.openmp import passive_openmp

_WORKER: Replayer | None = None
_WORKER_KEY: tuple[str, bool] | None = None  # (bundle, int8) of _WORKER in an executor's worker


@dataclass
class BatchOptions:
    out_dir: Path
    workers: int = 1
    resume: bool = True
    report: bool = True
    labels: Path | None = None  # split / labels CSV; also restricts the batch to its sessions
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    torch_threads: int | None = None  # per worker; default cores // workers
    int8: bool = False  # int8 (dynamic) audio encoder, quantised once per worker
    # An executor you already run (e.g. a Dask cluster's ``Client.get_executor()``, see
    # ``client_sdk/batch_cluster.py``): sessions go there instead of a local process pool; each of its
    # worker processes loads the bundle once, on its first session. The output folder must be shared.
    executor: cf.Executor | None = None


@dataclass
class BatchResult:
    rows: list[dict[str, Any]]  # summary rows of all finished sessions (this run and earlier)
    failures: list[dict[str, str]]
    skipped: list[str]  # finished earlier (resume)
    wall_s: float
    evaluation: dict[str, Any] | None = None

    @property
    def media_s(self) -> float:
        return float(sum(r.get("media_s", 0.0) for r in self.rows))


def _init_worker(bundle: str, threads: int, int8: bool = False) -> None:
    """Once per worker process: torch threads and the one model load this process makes."""
    global _WORKER
    passive_openmp()  # a spawned worker has not imported torch yet
    import torch

    torch.set_num_threads(max(1, threads))
    if _WORKER is not None:
        _WORKER.close()
    _WORKER = Replayer(bundle, int8=int8)


def _run_one(source: MediaSource, opts: ReplayOptions, out_dir: str, report: bool) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    result = _WORKER.replay(source, opts)
    write_outputs(result, Path(out_dir) / source.session_id, report=report)
    return result.summary()


def _run_one_anywhere(
    bundle: str,
    threads: int,
    int8: bool,
    source: MediaSource,
    opts: ReplayOptions,
    out_dir: str,
    report: bool,
) -> dict[str, Any]:
    """:func:`_run_one` in a worker of someone else's executor: loads the bundle on its first session."""
    global _WORKER_KEY
    if _WORKER is None or (bundle, int8) != _WORKER_KEY:
        _init_worker(bundle, threads, int8)
        _WORKER_KEY = (bundle, int8)
    return _run_one(source, opts, out_dir, report)


def _finished_row(folder: Path) -> dict[str, Any] | None:
    done = folder / DONE_FILE
    if not done.is_file():
        return None
    assessment = Assessment.model_validate_json(done.read_text())
    meta = json.loads((folder / "replay.json").read_text()) if (folder / "replay.json").is_file() else {}
    row: dict[str, Any] = {
        "session_id": assessment.session_id,
        "total": assessment.total,
        "binary": int(assessment.binary),
        "maa_total": assessment.maa_total,
    }
    row.update({f"item_{item.key}": item.score for item in assessment.items})
    media_s, wall_s = float(meta.get("media_s", 0.0)), float(meta.get("wall_s", 0.0))
    row.update(
        {
            "media_s": round(media_s, 3),
            "wall_s": round(wall_s, 3),
            "rtf": round(media_s / wall_s, 3) if wall_s else 0.0,
            "transcript_lines": sum(1 for _ in json.loads((folder / "transcript.json").read_text())["lines"])
            if (folder / "transcript.json").is_file()
            else 0,
            "transcript_source": assessment.model.transcript_source,
        }
    )
    return row


def run_batch(
    bundle: str | Path,
    sources: Sequence[MediaSource],
    options: BatchOptions,
    *,
    progress: bool = True,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Replay ``sources`` with ``options.workers`` processes; skip finished ones when resuming."""
    started = time.perf_counter()
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, SessionLabel] = read_labels(options.labels) if options.labels else {}
    if labels:
        sources = [s for s in sources if normalise_id(s.session_id) in labels]
    ids = [s.session_id for s in sources]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise MllmdrError(f"two recordings share a session id: {sorted(dupes)} (rename one)")
    skipped = [s.session_id for s in sources if options.resume and (out / s.session_id / DONE_FILE).is_file()]
    todo = [s for s in sources if s.session_id not in set(skipped)]
    failures: list[dict[str, str]] = []
    bar = _progress(len(sources), len(skipped), progress)
    workers = max(1, min(options.workers, len(todo) or 1))
    threads = options.torch_threads or max(1, (os.cpu_count() or 1) // workers)

    def done(sid: str, row: dict[str, Any] | None, err: BaseException | None) -> None:
        if err is not None:
            failures.append(
                {
                    "session_id": sid,
                    "error": f"{type(err).__name__}: {err}",
                    "code": getattr(err, "code", "internal"),
                }
            )
        elif row is not None and on_done is not None:
            on_done(row)
        if bar is not None:
            bar.update(1)

    if options.executor is not None and todo:
        args = (str(Path(bundle).resolve()), options.torch_threads or 1, options.int8)
        futures = {
            options.executor.submit(
                _run_one_anywhere, *args, s, options.replay, str(out.resolve()), options.report
            ): s
            for s in todo
        }
        for fut in cf.as_completed(futures):
            failed = fut.exception()
            done(futures[fut].session_id, None if failed else fut.result(), failed)
    elif workers == 1:
        if todo:
            _init_worker(str(bundle), threads, options.int8)
        for src in todo:
            try:
                done(src.session_id, _run_one(src, options.replay, str(out), options.report), None)
            except (MllmdrError, OSError, ValueError, RuntimeError) as exc:
                traceback.print_exc()
                done(src.session_id, None, exc)
        if _WORKER is not None:
            _WORKER.close()  # its speech-to-text worker process
    elif todo:
        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(str(bundle), threads, options.int8)
        ) as pool:
            futures = {pool.submit(_run_one, s, options.replay, str(out), options.report): s for s in todo}
            for fut in cf.as_completed(futures):
                failed = fut.exception()
                done(futures[fut].session_id, None if failed else fut.result(), failed)
    if bar is not None:
        bar.close()
    rows = [row for s in sources if (row := _finished_row(out / s.session_id)) is not None]
    _write_csv(out / "summary.csv", rows)
    _write_csv(out / "failures.csv", failures)
    evaluation = None
    if labels:
        evaluation = evaluate({normalise_id(r["session_id"]): r for r in rows}, labels)
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
        (out / "evaluation.md").write_text(evaluation_markdown(evaluation))
        _confusion(out, {normalise_id(r["session_id"]): r for r in rows}, labels)
    return BatchResult(rows, failures, skipped, time.perf_counter() - started, evaluation)


def _confusion(out: Path, preds: dict[str, dict[str, Any]], labels: dict[str, SessionLabel]) -> None:
    """``confusion.png`` of the binary screen (when some labelled session has a total)."""
    ids = [i for i in sorted(preds) if i in labels and labels[i].total is not None]
    if ids:
        plot_confusion(
            [int(labels[i].total or 0) for i in ids],
            [int(preds[i]["total"]) for i in ids],
            out / "confusion.png",
            "binary screen (replay)",
        )


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols or ["session_id"])
        writer.writeheader()
        writer.writerows(rows)


def _progress(total: int, already: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=already, unit="session", desc="replay")
