"""Synthetic corpus: determinism by seed (serial = parallel), DAIC-WOZ layout, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from mllmdr_core.config import VisualConfig
from mllmdr_core.features.face import make_face_tracker
from mllmdr_core.features.interview import pair_qa
from training.data import DaicWozReader
from training.synth import SynthConfig, generate_corpus, plan_session
from training.synth.__main__ import main
from training.synth.templates import ANSWERS, NEUTRAL_ANSWERS, fill

CFG = SynthConfig(
    n=2, seed=7, fps=5.0, width=320, height=240, rapport_questions=1, closing_question=True, test_sessions=1
)  # session 1002 is a content-held-out test session (test voice bank, mirrored face)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "corpus.json"  # corpus.json holds the wall time
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = generate_corpus(CFG, out, workers=1, progress=False)
    assert summary["sessions"] == 3 and summary["label"] == "synthetic (non-clinical)"
    return out


def test_deterministic_by_seed_and_parallel_equals_serial(corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(CFG, tmp_path / "b", workers=2, progress=False)
    assert again["sessions"] == 3
    first, second = _digest(corpus), _digest(tmp_path / "b")
    assert len(first) == 3 * 4 + 3 and first == second  # 4 files per session + 3 split CSVs, byte-identical
    other = plan_session(8, 0)
    assert plan_session(7, 0) == plan_session(7, 0) and other.turns != plan_session(7, 0).turns


def test_layout_is_read_by_the_daic_reader(corpus: Path) -> None:
    records = list(DaicWozReader(corpus))
    assert sorted(r.session_id for r in records) == ["1000", "1001", "1002"]
    assert {r.session_id: r.split for r in records}["1002"] == "test"  # the extra test-only session
    for rec in records:
        meta = json.loads((corpus / f"{rec.session_id}_P" / "synth_meta.json").read_text())
        assert rec.dataset == "synthetic" and rec.split == meta["split"]
        assert (
            meta["masked"] == (meta["mode"] == "words_neutral")
            and meta["label"] == "synthetic (non-clinical)"
        )
        assert rec.labels.items == meta["items"] and rec.labels.total == meta["total"] == sum(
            meta["items"].values()
        )
        assert rec.labels.binary == int(meta["total"] >= 10)
        speakers = [ln.speaker for ln in rec.transcript]
        assert speakers == ["clinician", "patient"] * 10  # rapport + 8 item questions + closing question
        pairs = pair_qa(rec.transcript)
        assert len(pairs) == 10
        for key, ev in meta["evidence"].items():  # the interview pairing maps each planted answer to its item
            pair = next(
                p for p in pairs if p.answers[0].start_s == pytest.approx(ev["answer_start_s"], abs=1e-3)
            )
            assert pair.answer_text == ev["answer"]
            assert key in pair.items
        audio = rec.load_audio()
        assert audio.shape[0] / 16000 == pytest.approx(meta["speech_stats"]["duration_s"], abs=0.01)
        assert rec.transcript[-1].end_s < len(audio) / 16000
        assert rec.video_path is not None
        with av.open(str(rec.video_path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert frames[0].shape == (240, 320, 3)
        assert len(frames) == pytest.approx(meta["speech_stats"]["duration_s"] * 5, abs=2)
        tracker = make_face_tracker(VisualConfig())
        try:  # mediapipe finds the face on sampled frames of the 320x240, 5 fps video
            present = [
                tracker.process(f, i / 5).present for i, f in enumerate(frames[:: len(frames) // 6][:6])
            ]
        finally:
            tracker.close()
        assert all(present)


def test_masked_modes_and_answers_follow_levels() -> None:
    items = {k: 3 for k in ANSWERS}
    words = plan_session(1, 0, items=items, mode="words_neutral")
    media = plan_session(1, 0, items=items, mode="media_neutral")
    full = plan_session(1, 0, items=items, mode="full")
    neutral = {fill(t, np.random.default_rng(i)) for t in NEUTRAL_ANSWERS for i in range(40)}
    assert all(t.text in neutral for t in words.turns if t.speaker == "patient" and t.item)
    assert not any(t.text in neutral for t in full.turns if t.speaker == "patient" and t.item)
    assert full.voice_severity > 0.9 and full.face_severity > 0.9
    assert media.voice_severity == pytest.approx(0.4, abs=0.15) and media.face_severity == pytest.approx(
        0.4, abs=0.15
    )
    low = plan_session(1, 0, items=dict.fromkeys(ANSWERS, 0), mode="media_neutral")
    assert (
        low.voice == media.voice or abs(low.voice.rate_wpm - media.voice.rate_wpm) < 20
    )  # label-independent
    totals = [plan_session(3, i).total for i in range(300)]
    assert min(totals) == 0 and max(totals) == 24 and 0.4 < np.mean([t >= 10 for t in totals]) < 0.6


def test_cli_writes_a_corpus_without_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "--out",
                str(tmp_path / "c"),
                "--n",
                "1",
                "--seed",
                "3",
                "--no-video",
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["sessions"] == 1 and summary["config"]["video"] is False
    assert summary["config"]["held_out_test"] is True and summary["config"]["test_sessions"] == 0
    assert not list((tmp_path / "c").rglob("*.mp4")) and len(list((tmp_path / "c").rglob("*_AUDIO.wav"))) == 1
