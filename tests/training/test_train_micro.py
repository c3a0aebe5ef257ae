"""The whole training chain on a micro generated corpus: synth → features → LM → stage 1 → stage 2 →
bundle → the server's Assessor. Real components throughout (espeak-ng, mediapipe, tiny HuBERT/Llama)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mllmdr_core.assess import Assessor
from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment
from mllmdr_core.bundle import load_bundle
from mllmdr_core.phq8 import ITEM_KEYS
from training.features import load_features
from training.pipeline import export_bundle, load_corpus, run_training, step_features, step_synth
from training.run_config import load_run_config


def _curve(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_micro_pipeline_trains_and_exports_a_bundle_the_assessor_runs(tmp_path: Path) -> None:
    cfg = load_run_config("micro", [f"workdir={tmp_path / 'run'}"])
    step_synth(cfg, progress=False)
    corpus = load_corpus(cfg)
    assert corpus.split("train") and all(s.rationales for s in corpus.sessions)
    step_features(cfg, corpus, progress=False)
    feats = load_features(Path(corpus.jobs[0].out_path))
    assert feats.audio.shape[0] > 0 and feats.visual.shape[0] > 0  # speech and face were found

    model, summary = run_training(cfg, corpus, progress=False)
    lm = _curve(cfg.work / "lm" / "curve.jsonl")
    assert lm[-1]["loss"] < 0.8 * lm[0]["loss"]  # the demo LM learns the corpus text
    s2 = [r for r in _curve(cfg.work / "stage2" / "curve.jsonl") if "mse_loss" in r]
    first, last = (
        np.mean([r["mse_loss"] for r in s2 if r["epoch"] == e]) for e in (0, cfg.stage2.epochs - 1)
    )
    assert last < first  # the MAA head learns the item scores (epoch means: single batches are noisy)
    assert summary["stage2"]["steps"] > 0 and (cfg.work / "curves.png").stat().st_size > 1000

    bundle = export_bundle(cfg, model, corpus, metrics={"training": summary})
    loaded = load_bundle(bundle)
    assert loaded.non_clinical and loaded.training_data == "synthetic"
    session = corpus.sessions[0]
    sess_feats = load_features(cfg.work / "features" / f"{session.session_id}.npz")
    result = Assessor(loaded).assess(
        session_id=session.session_id,
        kind="final",
        audio=sess_feats.audio,
        visual=sess_feats.visual,
        transcript=list(session.transcript),
        indicators=sess_feats.indicators,
        window=(0.0, max(ln.end_s for ln in session.transcript)),
    )
    assert isinstance(result, Assessment) and [it.key for it in result.items] == list(ITEM_KEYS)
    assert SYNTHETIC_LABEL in result.labels and result.model.bundle_id == loaded.bundle_id
    assert all(0 <= it.score <= 3 and it.maa_score is not None for it in result.items)

    # a rerun resumes from the finished stages instead of training again
    _, again = run_training(cfg, corpus, progress=False)
    assert again["stage1"]["resumed"] and again["stage2"]["resumed"]
