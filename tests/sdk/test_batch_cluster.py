"""Batch replay over a local Dask cluster of 2 worker processes (skipped where Dask is not installed:
it is the optional ``cluster`` extra)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from client_sdk.replay import ReplayOptions
from client_sdk.replay_outputs import DONE_FILE

distributed = pytest.importorskip("distributed")


def test_batch_on_a_local_dask_cluster_resumes(
    tiny_bundle: Path, recordings_dir: Path, tmp_path: Path
) -> None:
    from client_sdk.batch_cluster import run_batch_on_dask

    out = tmp_path / "out"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        opts = ReplayOptions(use_asr=False)
        first = run_batch_on_dask(client, tiny_bundle, recordings_dir, out, replay=opts, report=False)
        pids = client.run(os.getpid)
        assert not first.failures and sorted(r["session_id"] for r in first.rows) == ["s1", "s2"]
        assert len(pids) == 2
        stamp = (out / "s1" / DONE_FILE).stat().st_mtime_ns
        (out / "s2" / DONE_FILE).unlink()  # as if s2 had not finished
        again = run_batch_on_dask(client, tiny_bundle, recordings_dir, out, replay=opts, report=False)
    assert again.skipped == ["s1"] and (out / "s1" / DONE_FILE).stat().st_mtime_ns == stamp
    assert (out / "s2" / DONE_FILE).is_file()
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert sorted(r["session_id"] for r in rows) == ["s1", "s2"]
    assert all(float(r["media_s"]) > 2.5 for r in rows)
