"""The figures table in docs/benchmarks.md is generated from bench/results/ (one file per benchmark)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _make_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_table", ROOT / "bench" / "make_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_table_equals_a_fresh_generation() -> None:
    mt = _make_table()
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    assert doc.count(mt.BEGIN) == 1 and doc.count(mt.END) == 1
    fresh = mt.table()
    assert mt.replace_table(doc, fresh) == doc, "stale: run .venv/bin/python bench/make_table.py --write"
    assert len(fresh.splitlines()) == 2 + 25  # header + 25 rows: every benchmark's file was read
    assert "| live_sessions (demo) | demo: largest real-time N = **10** (lag p95 0.456 s)" in fresh
    assert "| hangup_latency | 10-min session: hang-up → final **0.779 s** vs offline 307.81 s" in fresh


def test_one_current_file_per_benchmark() -> None:
    mt = _make_table()
    results = ROOT / "bench" / "results"
    jsons = sorted(p.stem for p in results.glob("*.json"))
    assert jsons == sorted(mt.BENCHMARKS)
    for name in jsons:
        doc = json.loads((results / f"{name}.json").read_text())
        assert doc["bench"] == name and doc["date_utc"] and doc["command"] and doc["machine"], name
    plots = sorted(p.name for p in results.glob("*.png"))
    assert "long_session_rss.png" in plots
    owners = [[name for name in mt.BENCHMARKS if plot.startswith(name + "_")] for plot in plots]
    assert all(len(o) == 1 for o in owners), plots  # every plot belongs to one benchmark
    assert len({o[0] for o in owners}) == len(plots), plots  # at most one plot per benchmark


def test_table_reflects_the_result_files(tmp_path: Path) -> None:
    mt = _make_table()
    src = json.loads((ROOT / "bench" / "results" / "hangup_latency.json").read_text())
    src["streaming"]["hangup_latency_s"] = 16.0
    src["ratio_pct"], src["meets_target"] = 5.2, False
    (tmp_path / "hangup_latency.json").write_text(json.dumps(src))
    lines = mt.table(tmp_path).splitlines()
    assert len(lines) == 3
    assert "hang-up → final **16.0 s**" in lines[2] and "= **5.2 %** | ≤ 5 % | **no** |" in lines[2]
