"""Offline replay through the real core (tiny random-init bundle): one recording, ASR, CLI batch + resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from client_sdk.cli import main
from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.replay_outputs import DONE_FILE, write_outputs
from client_sdk.synth import SyntheticRecording
from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import MediaError
from mllmdr_core.media import resolve_source
from mllmdr_core.phq8 import ITEM_KEYS


@pytest.fixture(scope="module")
def replayer(tiny_bundle: Path) -> Replayer:
    return Replayer(tiny_bundle)


def test_replay_recording_with_transcript(
    replayer: Replayer, recording: SyntheticRecording, tmp_path: Path
) -> None:
    assert recording.video is not None
    result = replayer.replay(recording.video, ReplayOptions(indicator_interval_s=1.0), keep_features=True)
    a = result.assessment
    assert a.kind == "final" and a.session_id == "rec" and [i.key for i in a.items] == list(ITEM_KEYS)
    assert a.window_end_s == pytest.approx(6.0, abs=0.1) and result.media_s == pytest.approx(6.0, abs=0.1)
    assert [ln.text for ln in result.transcript] == [ln.text for ln in recording.lines]
    assert [s.media_time_s for s in result.indicators] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # the espeak-ng answer (1.4–4.8 s) is speech; the face is present in the frames
    assert 0.2 < result.session_indicators["speech_ratio"] < 0.9
    assert result.audio_features is not None and result.audio_features.shape[0] > 0
    assert result.visual_features is not None and result.visual_features.shape[0] >= 25  # 5 fps × 6 s
    assert result.rtf > 0
    out = write_outputs(result, tmp_path / "rec")
    again = Assessment.model_validate_json((out / DONE_FILE).read_text())
    assert again == a
    assert f"PHQ-8 total: {a.total} / 24" in (out / "report.md").read_text()
    assert (out / "indicators.png").stat().st_size > 1000 and "<img" in (out / "report.html").read_text()
    rows = list(csv.DictReader((out / "indicators.csv").read_text().splitlines()))
    assert len(rows) == 6 and "speech_ratio" in rows[0]
    meta = json.loads((out / "replay.json").read_text())
    assert meta["rtf"] == pytest.approx(result.rtf)
    prompts = json.loads((out / "prompts.json").read_text())
    assert prompts == {item.key: item.prompt for item in a.items} and list(prompts) == list(ITEM_KEYS)
    assert all(p.startswith("Rate PHQ-8 item") for p in prompts.values())
    assert any(f"A: {recording.lines[-1].text.strip()}" in p for p in prompts.values())  # whole answer
    assert a.transcript_coverage is not None and 0 < a.transcript_coverage <= 1


def test_replay_without_transcript_uses_asr(
    replayer: Replayer, wav_y4m: SyntheticRecording, tmp_path: Path
) -> None:
    assert wav_y4m.wav is not None and wav_y4m.y4m is not None
    folder = tmp_path / "pair"
    folder.mkdir()
    shutil.copy(wav_y4m.wav, folder / "call.wav")
    shutil.copy(wav_y4m.y4m, folder / "call.y4m")  # no transcript beside them
    src = resolve_source(folder / "call.wav")
    assert src.transcript is None and src.video == folder / "call.y4m"
    result = replayer.replay(src)
    assert result.transcript, "pocketsphinx should transcribe the espeak-ng answer"
    assert all(ln.source.startswith("asr:") for ln in result.transcript)
    assert result.assessment.model.transcript_source.startswith("asr")


def test_replay_without_video_marks_face_indicators_not_available(
    replayer: Replayer, wav_y4m: SyntheticRecording, tmp_path: Path
) -> None:
    """Audio only: the face indicators are absent from every output, with the reason; never 0.0."""
    assert wav_y4m.wav is not None
    folder = tmp_path / "audio-only"
    folder.mkdir()
    shutil.copy(wav_y4m.wav, folder / "call.wav")
    result = replayer.replay(resolve_source(folder / "call.wav"), ReplayOptions(indicator_interval_s=1.0))
    face = ("smile_ratio", "head_motion", "blink_rate_per_min", "head_pitch_deg")
    assert all(k not in result.session_indicators for k in face)
    assert all(result.indicators_unavailable[k] == "no video received" for k in face)
    assert "speech_ratio" in result.session_indicators and "speech_ratio" not in result.indicators_unavailable
    out = write_outputs(result, tmp_path / "out")
    meta = json.loads((out / "replay.json").read_text())
    assert meta["indicators_unavailable"]["smile_ratio"] == "no video received"
    assert "smile_ratio" not in meta["session_indicators"]
    rows = list(csv.DictReader((out / "indicators.csv").read_text().splitlines()))
    assert rows and all(not r.get("smile_ratio") for r in rows)  # empty cells, not 0
    assert "| smile_ratio | not available (no video received) |" in (out / "report.md").read_text()


def test_replay_bad_input(replayer: Replayer, tmp_path: Path) -> None:
    bad = tmp_path / "x.mkv"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError):
        replayer.replay(bad)


def test_cli_batch_parallel_resume_and_evaluation(
    tiny_bundle: Path, recordings_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    labels = tmp_path / "labels.csv"
    labels.write_text("Participant_ID,PHQ8_Binary,PHQ8_Score\ns1,0,3\ns2,1,12\nmissing,1,20\n")
    args = [
        "replay",
        str(recordings_dir),
        "--bundle",
        str(tiny_bundle),
        "--out",
        str(out),
        "--quiet",
        "--no-report",
        "--labels",
        str(labels),
    ]
    assert main([*args, "--workers", "2"]) == 0
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert sorted(r["session_id"] for r in rows) == ["s1", "s2"]
    assert all(float(r["media_s"]) == pytest.approx(3.0, abs=0.1) for r in rows)
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["n"] == 2 and ev["missing_predictions"] == ["missing"] and "f1" in ev["binary"]
    stamps = {sid: (out / sid / DONE_FILE).stat().st_mtime_ns for sid in ("s1", "s2")}
    shutil.rmtree(out / "s2")  # as if the run had died before s2 finished
    capsys.readouterr()
    assert main([*args, "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 finished session(s)" in printed
    assert (out / "s1" / DONE_FILE).stat().st_mtime_ns == stamps["s1"]  # not redone
    assert (out / "s2" / DONE_FILE).is_file()
    assert len(list(csv.DictReader((out / "summary.csv").read_text().splitlines()))) == 2
    assert (out / "confusion.png").is_file()  # drawn by mllmdr_core.metrics


def test_asr_transcript_same_for_both_pipelines_and_a_second_replay(
    replayer: Replayer, tmp_path: Path
) -> None:
    """Live vs replay agreement (issue 17): the offline pipeline (200 ms chunks, recogniser in a worker
    process), the server's 20 ms loop and a second replay by the same Replayer (a batch) hear the same
    segments with a recogniser that starts each recording over → the same transcript."""
    from client_sdk.synth import make_recording

    rec = make_recording(tmp_path, duration_s=14.0, name="asr", wav_y4m=True, seed=3)
    assert rec.wav is not None
    wav = tmp_path / "alone" / "call.wav"
    wav.parent.mkdir()
    shutil.copy(rec.wav, wav)  # audio only, no transcript beside it
    first = replayer.replay(wav).transcript
    loop = replayer.replay(wav, ReplayOptions(fast=False)).transcript
    again = replayer.replay(wav).transcript
    assert len(first) >= 2 and all(ln.source == "asr:pocketsphinx" for ln in first)
    words = [(ln.speaker, ln.text) for ln in first]
    assert [(ln.speaker, ln.text) for ln in loop] == words
    assert [(ln.speaker, ln.text) for ln in again] == words
    assert [ln.start_s for ln in loop] == pytest.approx([ln.start_s for ln in first], abs=0.05)


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_replay_processes_make_openmp_threads_sleep_unless_told(given: str | None, expected: str) -> None:
    """``passive_openmp`` (the CLI and every batch worker, before torch loads): idle OpenMP threads sleep
    instead of spinning against other processes; a policy the user set is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys; from mllmdr_core.openmp import passive_openmp; passive_openmp(); "
        "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]  # set before torch was imported
