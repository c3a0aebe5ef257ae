"""A replay's files: ``assessment.json`` (written last, the done-marker), ``transcript.json``,
``indicators.csv``, ``replay.json``, ``prompts.json`` (item key → the exact prompt text the model got)
and the markdown/HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from client_sdk.replay import ReplayResult
from client_sdk.report import write_report
from mllmdr_core.transcripts import dump_json

DONE_FILE = "assessment.json"


def write_outputs(result: ReplayResult, out_dir: str | Path, *, report: bool = True) -> Path:
    """Write ``assessment.json`` (last, as the done-marker), ``transcript.json``, ``indicators.csv``,
    ``replay.json``, ``prompts.json`` (item key → the exact prompt text the model got) and the
    markdown/HTML report into ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transcript.json").write_text(dump_json(result.transcript))
    names = sorted({k for s in result.indicators for k in s.values})
    rows = ["media_time_s," + ",".join(names)]
    rows += [
        f"{s.media_time_s:.3f}," + ",".join(_num(s.values.get(n)) for n in names) for s in result.indicators
    ]
    (out / "indicators.csv").write_text("\n".join(rows) + "\n")
    meta = {
        "session_id": result.source.session_id,
        "source": {
            k: str(v) if v is not None else None
            for k, v in (
                ("audio", result.source.audio),
                ("video", result.source.video),
                ("transcript", result.source.transcript),
            )
        },
        "kind": result.source.kind,
        "media_s": result.media_s,
        "wall_s": result.wall_s,
        "rtf": result.rtf,
        # media seconds / replay wall seconds (model load excluded: stage_s.model_load, once per process)
        "real_time_factor": result.rtf,
        "stage_s": result.stages,
        "stats": result.stats,
        "session_indicators": result.session_indicators,
        "assessed_indicators": result.assessed_indicators,
        "indicators_unavailable": result.indicators_unavailable,  # absent above: name → reason
    }
    (out / "replay.json").write_text(json.dumps(meta, indent=1, default=float))
    (out / "prompts.json").write_text(json.dumps(result.assessment.prompts(), indent=1, ensure_ascii=False))
    if report:
        write_report(result, out)
    tmp = out / (DONE_FILE + ".tmp")
    tmp.write_text(result.assessment.model_dump_json(indent=1))
    tmp.replace(out / DONE_FILE)
    return out


def _num(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:.6g}"
