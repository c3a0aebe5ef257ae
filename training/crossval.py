"""Leave-one-subject-out cross-validation over the train + dev sessions, with subject-level intervals.

A single official test split ranks models unstably (a 2026 audit of these benchmarks found the
cross-validation winner 20th on the official test), so ``mllmdr-train cv`` reports a second estimate:
the train and dev sessions (never the test split) are grouped by subject, the subjects are dealt into
``K`` folds (``K`` = number of subjects: leave-one-subject-out; default ``min(5, subjects)``), and per
fold a model is trained (demo LM when enabled, stage 1, stage 2) on the other folds' subjects and
predicts the held-out ones with the live ``Assessor``. The out-of-fold predictions are pooled and scored
(F1 of total ≥ 10, MAE, RMSE, CCC, …) with subject-level bootstrap intervals (whole subjects resampled:
``mllmdr_core.intervals``).

Subject: ``meta["subject_id"]`` or ``meta["speaker_id"]`` of the session record when the reader records
one, else the session id. DAIC-WOZ / E-DAIC: one session per participant, the participant id is the
session id. The synthetic generator draws every session's voice (pitch, rate, loudness) and face anew,
so each synthetic session is its own subject (the espeak-ng voice name is one of two per split, a voice
family, not a person).

Features are the run's (``<workdir>/features``, linked into each fold). By default each fold pre-trains
its own demo LM on its training sessions: the run's LM was trained on every train session's prompts and
targets, the held-out subjects' labels included. ``reuse_lm`` (``--reuse-lm``) links the run's LM
instead (cheaper; the report says so: the estimate is then optimistic). Layout::

    <workdir>/cv/fold_<k>/     features → ../../features (link), lm/, stage1/, stage2/, bundle/
    <workdir>/cv/report.json   folds, out-of-fold predictions, pooled metrics + intervals, official split
    <workdir>/cv/report.md
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mllmdr_core.errors import ConfigError
from mllmdr_core.phq8 import ITEM_KEYS
from training.dataset import SessionLabels
from training.eval import INTERVAL_METRICS, metric_intervals, predict_session, totals_report, with_interval
from training.run_config import RunConfig

DEFAULT_FOLDS = 5


def subject_of(record: Any) -> str:
    """The subject (speaker) of a session record: a recorded subject/speaker id, else the session id."""
    meta = record.meta or {}
    for key in ("subject_id", "speaker_id"):
        if meta.get(key) not in (None, ""):
            return str(meta[key])
    return str(record.session_id)


def assign_folds(subjects: Sequence[str], folds: int | None = None) -> dict[str, int]:
    """Subject → fold index: the sorted unique subjects dealt round-robin into ``folds`` folds
    (default ``min(DEFAULT_FOLDS, subjects)``; more folds than subjects is an error)."""
    unique = sorted(set(subjects))
    k = min(DEFAULT_FOLDS, len(unique)) if folds is None else folds
    if len(unique) < 2:
        raise ConfigError(f"cross-validation needs at least 2 subjects, found {len(unique)}")
    if not 2 <= k <= len(unique):
        raise ConfigError(f"folds must be between 2 and the number of subjects ({len(unique)}), got {k}")
    return {s: i % k for i, s in enumerate(unique)}


def _fold_config(cfg: RunConfig, fold_dir: Path) -> RunConfig:
    """The run's config with the fold's work directory and bundle location."""
    out = copy.deepcopy(cfg)
    out.workdir = str(fold_dir)
    out.export.out = str(fold_dir / "bundle")
    return out


def _link(target: Path, link: Path) -> None:
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=True)


def run_cv(
    cfg: RunConfig, folds: int | None = None, progress: bool = True, reuse_lm: bool = False
) -> dict[str, Any]:
    """Cross-validate ``cfg`` over its train + dev sessions; writes ``<workdir>/cv/report.{json,md}``."""
    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle
    from training.pipeline import (
        Corpus,
        corpus_feature_spec,
        encoder_dir,
        export_bundle,
        load_corpus,
        run_training,
        step_features,
        step_lm,
        step_synth,
    )

    t0, load_start = time.monotonic(), os.getloadavg()[0]
    if cfg.corpus.kind == "synth":
        step_synth(cfg, progress)
    corpus = load_corpus(cfg)
    step_features(cfg, corpus, progress)  # resumable: the run's features, extracted once
    reuse_lm = reuse_lm and cfg.lm_pretrain.enabled
    if reuse_lm:
        step_lm(cfg, corpus, progress)  # resumable: loads the run's LM when it exists
    records = {j.session_id: j.record for j in corpus.jobs}
    pool = [s for s in corpus.sessions if s.split in ("train", "dev") and s.has_items]
    excluded = [
        {"session_id": s.session_id, "split": s.split, "reason": "no PHQ-8 item labels"}
        for s in corpus.sessions
        if s.split in ("train", "dev") and not s.has_items
    ]
    subject = {s.session_id: subject_of(records[s.session_id]) for s in pool}
    fold_of = assign_folds(list(subject.values()), folds)
    k = max(fold_of.values()) + 1
    live = corpus_feature_spec(cfg, corpus).visual_spec == cfg.model_config().visual.spec
    cv_dir = cfg.work / "cv"
    fold_rows: list[dict[str, Any]] = []
    oof: list[dict[str, Any]] = []
    for f in range(k):
        fold_t0 = time.monotonic()
        held = [s for s in pool if fold_of[subject[s.session_id]] == f]
        train = [dataclasses.replace(s, split="train") for s in pool if fold_of[subject[s.session_id]] != f]
        fold_dir = cv_dir / f"fold_{f}"
        _link(cfg.work / "features", fold_dir / "features")
        _link(encoder_dir(cfg), fold_dir / "audio_encoder")
        if reuse_lm:
            _link(cfg.work / "lm", fold_dir / "lm")
        fcfg = _fold_config(cfg, fold_dir)
        ids = {s.session_id for s in train}
        fold_corpus = Corpus(train, [j for j in corpus.jobs if j.session_id in ids])
        if progress:
            print(f"cv fold {f + 1}/{k}: train {len(train)} sessions, hold out {len(held)}", flush=True)
        model, summary = run_training(fcfg, fold_corpus, progress)
        bundle = export_bundle(fcfg, model, fold_corpus, metrics={"training": summary})
        assessor = Assessor(load_bundle(bundle, check_features=live))
        for s in held:
            pred = predict_session(assessor, s, cfg.work / "features" / f"{s.session_id}.npz", "all")
            oof.append({
                "session_id": s.session_id, "subject": subject[s.session_id], "split": s.split, "fold": f,
                "true_items": dict(s.item_scores),
                "pred_items": {key: pred.items[key].score for key in ITEM_KEYS},
                "true_total": s.total, "pred_total": pred.total,
            })  # fmt: skip
        fold_rows.append({
            "fold": f, "held_out_subjects": sorted({subject[s.session_id] for s in held}),
            "held_out_sessions": [s.session_id for s in held], "train_sessions": sorted(ids),
            "seconds": round(time.monotonic() - fold_t0, 1),
        })  # fmt: skip
    report = cv_report(pool, oof, seed=cfg.seed)
    report.update(
        folds=fold_rows,
        excluded=excluded,
        official=official_figures(cfg.work / "eval" / "report.json"),
        meta={
            "config": cfg.name, "k": k, "n_subjects": len(fold_of), "n_sessions": len(pool),
            "splits_used": ["train", "dev"], "seconds": round(time.monotonic() - t0, 1),
            "lm": ("the run's (trained on all train sessions: optimistic)" if reuse_lm else "per fold")
            if cfg.lm_pretrain.enabled else "pretrained (not trained here)",
            "load_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        },
    )  # fmt: skip
    write_cv_report(report, cv_dir)
    return report


def cv_report(pool: Sequence[SessionLabels], oof: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Pooled out-of-fold metrics with subject-level bootstrap intervals (rows in ``pool`` order)."""
    by_id = {r["session_id"]: r for r in oof}
    rows = [by_id[s.session_id] for s in pool]
    preds = [{k: float(r["pred_items"][k]) for k in ITEM_KEYS} for r in rows]
    metrics = totals_report(pool, preds)
    metrics["intervals"] = metric_intervals(
        [dict(s.item_scores) for s in pool], preds, seed=seed, groups=[r["subject"] for r in rows]
    )
    return {"metrics": metrics, "predictions": rows}


def official_figures(path: Path) -> dict[str, Any] | None:
    """The official-split figures (all inputs) of the run's eval report, if there is one."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    entry = data.get("ablations", {}).get("all", {}).get("all")
    if entry is None:
        return None
    keep = {k: entry[k] for k in ("n", *INTERVAL_METRICS) if k in entry}
    keep["intervals"] = {k: v for k, v in entry.get("intervals", {}).items() if k in INTERVAL_METRICS}
    keep["split"] = data.get("meta", {}).get("split")
    keep["bundle_id"] = data.get("meta", {}).get("bundle_id")
    return keep


def _cell(m: dict[str, Any], key: str) -> str:
    return with_interval(float(m[key]), m.get("intervals", {}).get(key))


def _row(name: str, m: dict[str, Any]) -> str:
    return f"| {name} | {m['n']} | {' | '.join(_cell(m, k) for k in INTERVAL_METRICS)} |"


def write_cv_report(report: dict[str, Any], out_dir: Path) -> None:
    """``report.json`` and ``report.md`` of a cross-validation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    meta, m = report["meta"], report["metrics"]
    ci = m["intervals"]
    head = "| estimate | n | " + " | ".join(INTERVAL_METRICS) + " |"
    lines = [
        f"# Cross-validation: {meta['config']} ({meta['k']} folds over {meta['n_subjects']} subjects)",
        "",
        f"Train + dev sessions ({meta['n_sessions']}), the test split not used. Subjects dealt into "
        f"{meta['k']} folds; per fold a model trained on the other folds predicts the held-out subjects; "
        f"the out-of-fold predictions pooled. Intervals: {ci.get('resamples')} {ci.get('unit')}-level "
        f"bootstrap resamples, {ci.get('confidence')} percentile. LM: {meta['lm']}. {meta['seconds']} s "
        f"(load {meta['load_1m'][0]} → {meta['load_1m'][1]}).",
        "",
        head,
        "|" + "---|" * (2 + len(INTERVAL_METRICS)),
        _row("cross-validation (out of fold)", m),
    ]
    official = report.get("official")
    if official:
        lines.append(_row(f"official {official['split']} split", official))
    else:
        lines += ["", "No official-split figures: `<workdir>/eval/report.json` not found (run `eval`)."]
    lines += ["", "## Folds", "", "| fold | held-out subjects | train sessions | seconds |"]
    lines.append("|---|---|---|---|")
    for f in report["folds"]:
        held = ", ".join(f["held_out_subjects"])
        lines.append(f"| {f['fold']} | {held} | {len(f['train_sessions'])} | {f['seconds']} |")
    if report.get("excluded"):
        dropped = ", ".join(f"{e['session_id']} ({e['reason']})" for e in report["excluded"])
        lines += ["", f"Excluded: {dropped}"]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


__all__ = ["assign_folds", "cv_report", "run_cv", "subject_of", "write_cv_report"]
