"""Leave-one-subject-out cross-validation (training/crossval.py) on the micro corpus: two folds, tiny
epochs, real training and prediction."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mllmdr_core.errors import ConfigError
from training.cli import main
from training.crossval import assign_folds, official_figures, run_cv, subject_of, write_cv_report
from training.eval import write_report
from training.pipeline import evaluate_bundle, load_corpus
from training.run_config import load_run_config


def test_subject_is_the_recorded_speaker_else_the_session() -> None:
    assert subject_of(SimpleNamespace(session_id="301", meta={})) == "301"
    assert subject_of(SimpleNamespace(session_id="301", meta={"speaker_id": "P7"})) == "P7"
    both = {"subject_id": "S1", "speaker_id": "P7"}
    assert subject_of(SimpleNamespace(session_id="301", meta=both)) == "S1"
    # a subject's sessions share a fold; default K = min(5, subjects); round-robin over sorted subjects
    assert assign_folds(["b", "a", "b", "c"]) == {"a": 0, "b": 1, "c": 2}
    assert assign_folds(["a", "b", "c", "d"], 2) == {"a": 0, "b": 1, "c": 0, "d": 1}
    assert set(assign_folds([str(i) for i in range(12)]).values()) == set(range(5))
    with pytest.raises(ConfigError, match="folds must be between 2 and the number of subjects"):
        assign_folds(["a", "b"], 3)
    with pytest.raises(ConfigError, match="at least 2 subjects"):
        assign_folds(["a", "a"])


def test_cv_predicts_every_train_dev_session_once_out_of_fold(tmp_path: Path) -> None:
    work = tmp_path / "run"
    sets = ["lm_pretrain.epochs=1", "stage2.epochs=1", "features.workers=2"]
    argv = ["cv", "--config", "micro", "--workdir", str(work), "--folds", "2", "--quiet"]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0

    cfg = load_run_config("micro", [f"workdir={work}", *sets])
    corpus = load_corpus(cfg)
    pool = sorted(s.session_id for s in corpus.sessions if s.split in ("train", "dev"))
    test_ids = {s.session_id for s in corpus.split("test")}
    assert test_ids and len(pool) == 4
    report = json.loads((work / "cv" / "report.json").read_text())
    preds = report["predictions"]
    assert sorted(r["session_id"] for r in preds) == pool  # each train/dev session exactly once
    assert report["meta"]["k"] == 2 and report["meta"]["n_subjects"] == 4  # synth: subject = session
    folds = report["folds"]
    for f in folds:  # held out from its own training; the rest of the pool trained on; never the test split
        assert not set(f["held_out_sessions"]) & set(f["train_sessions"])
        assert sorted([*f["held_out_sessions"], *f["train_sessions"]]) == pool
        assert not test_ids & {*f["held_out_sessions"], *f["train_sessions"]}
        assert (work / "cv" / f"fold_{f['fold']}" / "bundle" / "bundle.json").exists()
    assert sorted(s for f in folds for s in f["held_out_sessions"]) == pool
    for r in preds:
        assert r["fold"] == next(f["fold"] for f in folds if r["session_id"] in f["held_out_sessions"])
        assert r["pred_total"] == sum(r["pred_items"].values()) and 0 <= r["pred_total"] <= 24
        truth = next(s for s in corpus.sessions if s.session_id == r["session_id"])
        assert r["true_total"] == truth.total

    m = report["metrics"]
    assert m["n"] == 4 and m["intervals"]["unit"] == "subject" and m["intervals"]["resamples"] == 1000
    mae = sum(abs(r["true_total"] - r["pred_total"]) for r in preds) / 4
    assert m["mae"] == pytest.approx(mae)
    for key in ("f1", "mae", "rmse", "ccc"):
        low, high = m["intervals"][key]
        if math.isfinite(m[key]) and math.isfinite(low):
            assert low - 1e-9 <= m[key] <= high + 1e-9, key
    md = (work / "cv" / "report.md").read_text()
    assert "| cross-validation (out of fold) | 4 |" in md and "No official-split figures" in md
    assert report["official"] is None and report["meta"]["lm"] == "per fold"
    assert (work / "cv" / "fold_0" / "lm" / "model").is_dir() and not (work / "lm").exists()

    # beside the official split: an eval report in the run (here fold 0's bundle on dev) is read in
    eval_cfg = load_run_config("micro", [f"workdir={work}", *sets, "eval.split=dev", "eval.ablations=[all]"])
    fold0 = work / "cv" / "fold_0" / "bundle"
    results = evaluate_bundle(eval_cfg, corpus, fold0, work / "eval", progress=False)
    official = official_figures(work / "eval" / "report.json")
    # and the eval report embeds the run's cross-validation figures (<workdir>/cv beside <workdir>/eval)
    cv = json.loads((work / "eval" / "report.json").read_text())["cross_validation"]
    assert cv["available"] and cv["path"] == str(work / "cv" / "report.json")
    assert (cv["k"], cv["n_subjects"], cv["interval_unit"]) == (2, 4, "subject")
    assert cv["metrics"]["n"] == 4 and cv["metrics"]["mae"] == pytest.approx(m["mae"])
    assert cv["metrics"]["intervals"]["mae"] == m["intervals"]["mae"]
    eval_md = (work / "eval" / "report.md").read_text()
    assert "## Cross-validation (train + dev subjects, out of fold)" in eval_md
    assert f"| cross-validation, 2 folds over 4 subjects | 4 | {m['precision']:.2f}" in eval_md
    assert "| this report: dev split, all inputs | 1 |" in eval_md
    # no CV report beside the report's folder or the bundle's: the report says so
    write_report(results, tmp_path / "elsewhere" / "eval")
    none = json.loads((tmp_path / "elsewhere" / "eval" / "report.json").read_text())["cross_validation"]
    assert none == {
        "available": False,
        "looked_in": [str(tmp_path / "elsewhere" / "cv" / "report.json"),
                      str(work / "cv" / "fold_0" / "cv" / "report.json")],
    }  # fmt: skip
    elsewhere_md = (tmp_path / "elsewhere" / "eval" / "report.md").read_text()
    assert "No cross-validation figures: no report at" in elsewhere_md
    assert official is not None and official["split"] == "dev" and official["n"] == 1
    write_cv_report({**report, "official": official}, work / "cv")
    assert "| official dev split | 1 |" in (work / "cv" / "report.md").read_text()

    # --reuse-lm: the folds link the run's demo LM (trained once here), and the report says so
    shutil.rmtree(work / "cv")
    again = run_cv(cfg, folds=2, progress=False, reuse_lm=True)
    assert (work / "lm" / "model").is_dir() and (work / "cv" / "fold_1" / "lm").is_symlink()
    assert again["meta"]["lm"].startswith("the run's")
    assert "optimistic" in (work / "cv" / "report.md").read_text()
    assert sorted(r["session_id"] for r in again["predictions"]) == pool
