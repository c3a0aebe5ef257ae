"""Evaluation: metric values against hand-computed numbers, grounding, ablations on a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmdr_core.assess import Assessor
from mllmdr_core.backends.transformers_backend import TransformersBackend
from mllmdr_core.bundle import LoadedBundle
from mllmdr_core.features.spec import FeatureSpec
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.grounding import check
from mllmdr_core.model.mllm import MLlmDR
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.testing import tiny_config
from training.dataset import SessionLabels, build_examples
from training.eval import (
    ItemPrediction,
    SessionPrediction,
    _metrics,
    ablated_snapshot,
    bypass_lqformers,
    check_targets,
    evaluate,
    reported_score,
    write_report,
)
from training.features import SessionFeatures, save_features


def test_reported_score_falls_back_to_rounded_maa() -> None:
    assert reported_score(2, 0.1) == (2, False)
    assert reported_score(None, 2.6) == (3, True)
    assert reported_score(None, 7.0) == (3, True) and reported_score(None, -1.0) == (0, True)


AUDIO_DIM, VISUAL_DIM = 18, 10


@pytest.fixture(scope="module")
def tiny_model() -> MLlmDR:
    texts = [
        "Rate PHQ-8 item Sleep Q: How do you sleep? A: badly. Evaluation Result: 2. Evaluation Reason: x"
    ] * 8
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = tiny_config()
    cfg.llm.max_new_tokens = 6
    torch.manual_seed(0)
    return MLlmDR(cfg, AUDIO_DIM, VISUAL_DIM, tok).eval()


def _loaded(model: MLlmDR) -> LoadedBundle:
    """The model as a loaded bundle (what ``evaluate``'s ``Assessor`` reads), without writing one."""
    spec = FeatureSpec("hubert+prosody-v1", AUDIO_DIM, "mediapipe-face-v1", VISUAL_DIM)
    manifest = {"training_data": "synthetic", "non_clinical": True}
    return LoadedBundle(model.config, model, model.tokenizer, manifest, None, spec, "tiny-eval")


def _session(i: int, masked: bool) -> SessionLabels:
    lines = (
        TranscriptLine(0.0, 2.0, "clinician", "How have you been sleeping?"),
        TranscriptLine(2.5, 5.0, "patient", "I barely sleep at all."),
    )
    return SessionLabels(
        f"s{i}",
        "test",
        lines,
        dict.fromkeys(ITEM_KEYS, 2 if i % 2 else 0),
        tags=frozenset({"masked"}) if masked else frozenset(),
    )


def test_evaluate_runs_every_ablation_and_writes_report(tiny_model: MLlmDR, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sessions = [_session(i, masked=i < 2) for i in range(4)]
    for s in sessions:
        save_features(
            tmp_path / "features" / f"{s.session_id}.npz",
            SessionFeatures(
                rng.normal(size=(7, AUDIO_DIM)).astype(np.float32),
                rng.normal(size=(5, VISUAL_DIM)).astype(np.float32),
                {"speech_ratio": 0.5},
                "hubert+prosody-v1",
                "mediapipe-face-v1",
                5.0,
            ),
        )
    assessor = Assessor(_loaded(tiny_model), TransformersBackend(tiny_model, max_new_tokens=6))
    results = evaluate(
        assessor, sessions, tmp_path / "features", indicator_names=["speech_ratio"], progress=False
    )
    assert set(results["ablations"]) == {"all", "text", "av", "no_lqformer"}
    for entry in results["ablations"].values():
        assert entry["all"]["n"] == 4 and entry["masked"]["n"] == 2
        assert 0.0 <= entry["all"]["f1"] <= 1.0 and entry["all"]["mae"] >= 0.0
        assert entry["totals"]["true"] == [0, 16, 0, 16]
    targets = check_targets(results)
    assert set(targets) == {"f1_all", "mae_all", "grounding_all", "masked_f1_gain"}
    grounded = results["ablations"]["all"]["all"]["grounded_share"]
    assert targets["grounding_all"] == {"value": grounded, "target": 0.95, "met": grounded >= 0.95}
    for subset in ("all", "masked"):  # bootstrap intervals bracket every point value
        m = results["ablations"]["all"][subset]
        ci = m["intervals"]
        assert ci["resamples"] == 1000 and ci["confidence"] == 0.95 and ci["unit"] == "session"
        for key in ("precision", "recall", "f1", "mae", "rmse", "ccc"):
            assert ci[key][0] <= m[key] + 1e-9 and m[key] <= ci[key][1] + 1e-9, key
        assert set(ci["item_mae"]) == set(ITEM_KEYS)
        assert all(lo <= m["item_mae"][k] + 1e-9 <= hi + 2e-9 for k, (lo, hi) in ci["item_mae"].items())
    paths = write_report(results, tmp_path / "eval", header="# test")
    assert json.loads(paths["json"].read_text())["n_sessions"] == 4
    md = paths["md"].read_text()
    assert "Masked subset" in md and "95 % percentile bootstrap over sessions (1000 resamples" in md
    mae, (lo, hi) = (
        results["ablations"]["all"]["all"]["mae"],
        results["ablations"]["all"]["all"]["intervals"]["mae"],
    )
    assert f"{mae:.2f} [{lo:.2f}, {hi:.2f}]" in md
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.0 <= results["ablations"]["all"]["all"]["grounded_share"] <= 1.0


def test_grounded_share_is_the_mean_core_grounding_score() -> None:
    sessions = [_session(0, masked=False), _session(1, masked=False)]
    preds = []
    for s, g in zip(sessions, (1.0, 0.5), strict=True):
        pred = SessionPrediction(s.session_id)
        pred.items = {k: ItemPrediction(1, 1, 1.0, "x", False, g if k == "sleep" else 1.0) for k in ITEM_KEYS}
        preds.append(pred)
    assert _metrics(sessions, preds, [])["grounded_share"] == pytest.approx(15.5 / 16)


def test_bypass_lqformers_changes_soft_tokens_and_restores(tiny_model: MLlmDR) -> None:
    feats = torch.randn(1, 9, AUDIO_DIM)
    mask = torch.ones(1, 9, dtype=torch.bool)
    with torch.no_grad():
        normal = tiny_model.audio_lqformer(feats, mask)
        with bypass_lqformers(tiny_model):
            pooled = tiny_model.audio_lqformer(feats, mask)
        again = tiny_model.audio_lqformer(feats, mask)
    assert pooled.shape == normal.shape == (1, tiny_model.config.lqformer.num_queries, tiny_model.d_llm)
    assert torch.allclose(pooled[:, 0], pooled[:, -1])  # one pooled vector, repeated for every slot
    assert not torch.allclose(pooled, normal)
    torch.testing.assert_close(again, normal)


def test_ablated_snapshot_drops_the_ablated_inputs(tmp_path: Path) -> None:
    session = _session(1, masked=False)
    path = tmp_path / "s1.npz"
    audio = np.ones((7, AUDIO_DIM), dtype=np.float32)
    visual = np.zeros((5, VISUAL_DIM), dtype=np.float32)
    save_features(path, SessionFeatures(audio, visual, {}, "hubert+prosody-v1", "mediapipe-face-v1", 9.0))
    full = ablated_snapshot(session, path, "all")
    assert full.audio.shape == (7, AUDIO_DIM) and full.visual.shape == (5, VISUAL_DIM)
    assert full.transcript == session.transcript and full.window == (0.0, 9.0)
    text = ablated_snapshot(session, path, "text")
    assert text.audio.shape[0] == 0 and text.visual.shape[0] == 0 and text.transcript == session.transcript
    assert text.window == (0.0, 5.0)  # the transcript's end: no features were read
    av = ablated_snapshot(session, path, "av")
    assert av.transcript == () and np.array_equal(av.audio, audio)
    ta, tv = ablated_snapshot(session, path, "text_audio"), ablated_snapshot(session, path, "text_video")
    assert np.array_equal(ta.audio, audio) and ta.visual.shape[0] == 0 and ta.transcript == session.transcript
    assert (
        tv.audio.shape[0] == 0 and np.array_equal(tv.visual, visual) and tv.transcript == session.transcript
    )
    assert ta.window == tv.window == (0.0, 9.0)
    with pytest.raises(ValueError, match="unknown ablation 'video'"):
        ablated_snapshot(session, path, "video")


def test_indicators_follow_the_ablated_modalities_and_the_prompt_option(tmp_path: Path) -> None:
    session = _session(1, masked=False)
    path = tmp_path / "s1.npz"
    ind = {"speech_ratio": 0.5, "smile_ratio": 0.25, "t_s": 9.0}
    feats = SessionFeatures(
        np.ones((7, AUDIO_DIM), np.float32), np.ones((5, VISUAL_DIM), np.float32), ind, "a", "v", 9.0
    )
    save_features(path, feats)
    seen = {
        a: dict(ablated_snapshot(session, path, a).indicators)
        for a in ("all", "text", "text_audio", "text_video")
    }
    assert seen == {
        "all": ind,
        "text": {},
        "text_audio": {"speech_ratio": 0.5, "t_s": 9.0},  # the face indicators go with the video
        "text_video": {"smile_ratio": 0.25, "t_s": 9.0},
    }
    cfg = tiny_config()
    for on in (False, True):  # training prompts carry the line only with the option, never in "text"
        cfg.assess.indicators_in_prompt = on
        for modality in ("all", "text"):
            examples = build_examples([session], tmp_path, cfg, modality=modality)
            # the bundle's prompt_indicators: the validated voice measures (smile_ratio is not one)
            with_line = ["Indicators: speech_ratio 0.50\n" in ex.prompt for ex in examples]
            assert with_line == [on and modality == "all"] * len(ITEM_KEYS)
            # the target cites the line's values for the items they speak to, and only from the line
            cited = "Measured in this call: speech_ratio 0.50."
            cites = {ex.item_key for ex in examples if cited in ex.target}
            assert cites == ({"interest", "tired", "psychomotor"} if on and modality == "all" else set())
            for ex in examples:
                assert check(ex.target.split("Evaluation Reason: ", 1)[1], ex.prompt, ex.score).score == 1.0
