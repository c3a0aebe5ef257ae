"""The whole training chain on a micro generated corpus: synth → features → LM → stage 1 → stage 2 →
bundle → the server's Assessor. Real components throughout (espeak-ng, mediapipe, tiny HuBERT/Llama)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.assess import Assessor
from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment
from mllmdr_core.bundle import load_bundle
from mllmdr_core.errors import ConfigError
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.snapshot import SessionSnapshot
from training.features import extract_one, load_features
from training.pipeline import evaluate_bundle, export_bundle, load_corpus, run_all, run_training
from training.run_config import load_run_config
from training.select import choose


def _curve(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_micro_pipeline_trains_and_exports_a_bundle_the_assessor_runs(tmp_path: Path) -> None:
    # run_all: synth → features (2 workers) beside the LM → stages → export → eval (2 processes)
    cfg = load_run_config("micro", [f"workdir={tmp_path / 'run'}", "features.workers=2", "eval.workers=2"])
    result = run_all(cfg, progress=False)
    corpus = load_corpus(cfg)
    assert corpus.split("train") and all(s.rationales for s in corpus.sessions)
    feats = load_features(Path(corpus.jobs[0].out_path))
    assert feats.audio.shape[0] > 0 and feats.visual.shape[0] > 0  # speech and face were found

    # audio pushed in coalesced runs gives the features of 20-ms frame-by-frame pushes (the live path)
    job = corpus.jobs[0]
    per_frame = extract_one(job, cfg.model_config(), str(cfg.work / "audio_encoder"), coalesce_s=0.0)
    # equal up to float rounding: runs batch several HuBERT windows per forward pass (other matmul shapes);
    # 1e-5 is the core's chunking-invariance tolerance (tests/core/features/test_encoder.py)
    np.testing.assert_allclose(per_frame.audio, feats.audio, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(per_frame.visual, feats.visual)

    # the timing table: every step, in order, overlapping features and LM; in timings.json and reports
    timing = json.loads((cfg.work / "timings.json").read_text())
    names = [s["name"] for s in timing["steps"]]
    assert names == [
        "synth", "corpus + rationales", "LM pre-training", "features",
        "model set-up", "stage 1", "stage 2", "export", "eval",
    ]  # fmt: skip
    steps = {s["name"]: s for s in timing["steps"]}
    assert steps["features"]["start_s"] == steps["LM pre-training"]["start_s"]
    assert steps["features"]["cpu_workers_s"] > 0 and steps["stage 2"]["cpu_main_s"] > 0
    assert timing["total_s"] >= steps["eval"]["end_s"] > steps["synth"]["end_s"] > 0
    assert json.loads((cfg.work / "eval" / "report.json").read_text())["timing"] == timing
    assert "## Wall time per step" in (cfg.work / "eval" / "report.md").read_text()
    report = json.loads((cfg.work / "eval" / "report.json").read_text())
    assert list(report["ablations"]) == list(cfg.eval.ablations)  # one in a worker process, merged
    assert set(result["targets"]) == {"f1_all", "mae_all", "grounding_all", "masked_f1_gain"}
    assert report["test_ledger"]["evaluations"] == 1 and not report["test_ledger"]["forced"]
    held = report["content_held_out"]  # the test answers come from banks disjoint from train/dev
    assert held["held_out"] is True and held["verbatim_answers"] == 0 and held["shared_5gram_share"] == 0.0
    all_all = report["ablations"]["all"]["all"]
    assert all_all["intervals"]["f1"][0] <= all_all["f1"] + 1e-9 <= all_all["intervals"]["f1"][1] + 2e-9

    # the bundle carries its report and model card, outside the hash: it still loads and verifies
    bundle_dir = Path(result["bundle"])
    doc = json.loads((bundle_dir / "report.json").read_text())
    assert doc["bundle_id"] == load_bundle(bundle_dir).bundle_id == report["meta"]["bundle_id"]
    test = doc["test"]
    assert test["evaluations"] == 1 and test["grounding"] == all_all["grounded_share"]
    assert test["content_held_out"] == held and test["masked"]["n"] == report["meta"]["masked_sessions"]
    assert test["metrics"]["f1"] == all_all["f1"] and test["metrics"]["intervals"] == all_all["intervals"]
    assert list(test["ablations"]) == list(cfg.eval.ablations)
    assert test["ablations"]["text"]["inputs"] == "text only" and test["indicators_in_prompt"] is False
    card = (bundle_dir / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "\nnon_clinical: true\n" in card
    for heading in (
        "## Intended use",
        "## Non-clinical",
        "## Training data",
        "## Evaluation (test split",
        "## Limitations",
    ):
        assert heading in card, heading
    train_n = len(corpus.split("train"))
    assert f"sessions per split: train {train_n}, " in card and "scored 1 time(s)" in card
    with pytest.raises(ConfigError, match="already scored 1 time"):  # the test split is scored once
        evaluate_bundle(cfg, corpus, Path(result["bundle"]), tmp_path / "again", progress=False)
    assert not (tmp_path / "again").exists()

    model, summary = run_training(cfg, corpus, progress=False)  # resumes the finished stages
    assert summary["stage2"]["resumed"]
    lm = _curve(cfg.work / "lm" / "curve.jsonl")
    assert lm[-1]["loss"] < 0.8 * lm[0]["loss"]  # the demo LM learns the corpus text
    s2 = [r for r in _curve(cfg.work / "stage2" / "curve.jsonl") if "mse_loss" in r]
    first, last = (
        np.mean([r["mse_loss"] for r in s2 if r["epoch"] == e]) for e in (0, cfg.stage2.epochs - 1)
    )
    assert last < first  # the MAA head learns the item scores (epoch means: single batches are noisy)
    assert summary["stage2"]["steps"] > 0 and (cfg.work / "curves.png").stat().st_size > 1000

    bundle = export_bundle(cfg, model, corpus, metrics={"training": summary})
    loaded = load_bundle(bundle)  # re-exported: a model card without figures until the next eval
    assert not (bundle / "report.json").exists() and "## Evaluation" not in (bundle / "README.md").read_text()
    assert loaded.non_clinical and loaded.training_data == "synthetic"
    session = corpus.sessions[0]
    sess_feats = load_features(cfg.work / "features" / f"{session.session_id}.npz")
    result = Assessor(loaded).assess(
        SessionSnapshot.of(
            audio=sess_feats.audio,
            visual=sess_feats.visual,
            transcript=list(session.transcript),
            indicators=sess_feats.indicators,
            window=(0.0, max(ln.end_s for ln in session.transcript)),
        ),
        session_id=session.session_id,
        kind="final",
    )
    assert isinstance(result, Assessment) and [it.key for it in result.items] == list(ITEM_KEYS)
    assert SYNTHETIC_LABEL in result.labels and result.model.bundle_id == loaded.bundle_id
    assert all(0 <= it.score <= 3 and it.maa_score is not None for it in result.items)

    # a rerun resumes from the finished stages instead of training again
    _, again = run_training(cfg, corpus, progress=False)
    assert again["stage1"]["resumed"] and again["stage2"]["resumed"]

    # options chosen on dev: one model per indicators_in_prompt value (side by side, sharing corpus,
    # features and LM), each one's bundle scored on dev once per grounded_decoding value (decode-time: no
    # retraining), the chosen combination installed and the comparison in the reports
    chosen_dir = tmp_path / "chosen"
    sel_cfg = load_run_config("micro", [
        f"workdir={cfg.work}", "select.indicators_in_prompt=[false, true]", "eval.split=dev",
        "select.grounded_decoding=[false, true]", "eval.ablations=[all, text]", f"export.out={chosen_dir}",
    ])  # fmt: skip
    run_all(sel_cfg, progress=False)
    names = [s["name"] for s in json.loads((cfg.work / "timings.json").read_text())["steps"]]
    assert "stage 1 + stage 2 + dev selection" in names and "LM pre-training" in names
    selection = json.loads((cfg.work / "eval" / "report.json").read_text())["selection"]
    variants = selection["variants"]
    combos = [(v["indicators_in_prompt"], v["grounded_decoding"]) for v in variants]
    assert combos == [(False, False), (False, True), (True, False), (True, True)]
    assert selection["split"] == "dev"
    assert all(v["dev"]["n_sessions"] == len(corpus.split("dev")) for v in variants)
    for v in variants:  # each combination was scored from a bundle whose config carries it
        assess = load_bundle(v["bundle"]).config.assess
        assert (assess.indicators_in_prompt, assess.grounded_decoding) == (
            v["indicators_in_prompt"], v["grounded_decoding"]
        )  # fmt: skip
    assert variants[0]["train_s"] == variants[1]["train_s"]  # one training, two decode values
    assert selection["chosen_value"] == choose(variants)["indicators_in_prompt"]
    assert selection["options"] == ["indicators_in_prompt", "grounded_decoding"]
    best = choose(variants)
    assert selection["chosen_values"] == {k: best[k] for k in selection["options"]}
    shipped = load_bundle(chosen_dir)
    assert shipped.config.assess.indicators_in_prompt is selection["chosen_value"]
    assert shipped.config.assess.grounded_decoding is selection["chosen_values"]["grounded_decoding"]
    assert shipped.bundle_id == load_bundle(best["bundle"]).bundle_id  # the scored bundle ships
    report_md = (cfg.work / "eval" / "report.md").read_text()
    table = report_md.split("## Options chosen on the dev split")[1].split("\n\n")[2].splitlines()
    assert table[0].startswith("| indicators_in_prompt | grounded_decoding | dev n |") and len(table) == 2 + 4
    on = load_bundle(cfg.work / "select" / "indicators_on" / "bundle-grounded_off")
    prompts = Assessor(on).prompts(
        SessionSnapshot.of(
            transcript=list(session.transcript), indicators=sess_feats.indicators, audio=sess_feats.audio
        )
    )
    assert all("\nIndicators: speech_ratio " in p.text for p in prompts.values())
    doc = json.loads((chosen_dir / "report.json").read_text())
    assert doc["dev"]["selection"]["chosen_value"] == selection["chosen_value"]
    card = (chosen_dir / "README.md").read_text()
    assert "Options chosen on the dev split" in card and card.count("\n| True | True | ") == 1

    # a fresh test split (round 2) on a copy of the corpus: only the new test sessions are generated,
    # get rationales and features; round 1's test session is retired; the ledger counts the new split once
    r2_corpus = tmp_path / "corpus_round2"
    shutil.copytree(cfg.work / "corpus", r2_corpus)
    r2 = load_run_config("micro", [
        f"workdir={cfg.work}", f"corpus.path={r2_corpus}", "corpus.synth.test_round=2",
        "corpus.synth.earlier_test_sessions=[0]", "corpus.synth.test_sessions=2",
    ])  # fmt: skip
    feats_before = {p.name: p.stat().st_mtime_ns for p in (cfg.work / "features").glob("*.npz")}
    round1_test = [s.session_id for s in corpus.split("test")]
    result2 = run_all(r2, progress=False)
    corpus2 = load_corpus(r2)
    for split in ("train", "dev"):
        assert corpus2.split(split) == corpus.split(split)  # same ids, labels, transcripts, rationales
    new_ids = [s.session_id for s in corpus2.split("test")]
    assert new_ids == ["1005", "1006"] and not set(new_ids) & set(round1_test)
    assert all(s.rationales for s in corpus2.sessions)  # appended for the new sessions
    feats_after = {p.name: p.stat().st_mtime_ns for p in (cfg.work / "features").glob("*.npz")}
    assert {k: v for k, v in feats_after.items() if k in feats_before} == feats_before
    assert sorted(set(feats_after) - set(feats_before)) == ["1005.npz", "1006.npz"]
    steps2 = {s["name"]: s for s in json.loads((cfg.work / "timings.json").read_text())["steps"]}
    assert steps2["synth"]["note"] == "2 of 6 sessions generated (the others existed)"
    report2 = json.loads((cfg.work / "eval" / "report.json").read_text())
    assert report2["test_ledger"]["evaluations"] == 1 and report2["meta"]["n_sessions"] == 2
    retired = {"n": 1, "reason": report2["test_round"]["retired"]["reason"], "session_ids": round1_test}
    assert report2["test_round"] == {"round": 2, "retired": retired} == result2["test_round"]
    assert "already scored" in retired["reason"]
    ledger = json.loads((r2_corpus / "eval_ledger.json").read_text())
    assert ledger[report["test_ledger"]["fingerprint"]] == json.loads(
        (cfg.work / "corpus" / "eval_ledger.json").read_text()
    )[report["test_ledger"]["fingerprint"]]  # round 1's count kept (1)
    assert len(ledger) == 2 and len(ledger[report2["test_ledger"]["fingerprint"]]) == 1
    test2 = json.loads((cfg.work / "bundle" / "report.json").read_text())["test"]
    assert test2["round"] == 2 and test2["retired"] == retired and test2["evaluations"] == 1
    card2 = (cfg.work / "bundle" / "README.md").read_text()
    assert "Test round 2: the 1 sessions of the earlier rounds' test splits were retired after" in card2
    report2_md = (cfg.work / "eval" / "report.md").read_text()
    assert f"1 sessions retired ({retired['reason']}): {round1_test[0]}." in report2_md
