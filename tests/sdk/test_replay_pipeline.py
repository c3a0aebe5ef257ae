"""The offline replay pipeline: same features as the server's 20 ms loop, speech-to-text in a worker
process with the same lines, the per-stage profile, the int8 option."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from client_sdk.cli import main
from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.replay_pipeline import audio_chunks
from client_sdk.replay_profile import STAGES
from client_sdk.replay_video import FeedTimes
from client_sdk.synth import SyntheticRecording
from mllmdr_core.media import AudioFrame, resolve_source


@pytest.fixture(scope="module")
def replayer(tiny_bundle: Path) -> Iterator[Replayer]:
    made = Replayer(tiny_bundle)
    yield made
    made.close()


def test_audio_chunks_end_on_the_grid_and_keep_every_sample() -> None:
    frames = [AudioFrame(np.full((960, 2), i, np.int16), 48000, 2, 0.5 + i * 0.02) for i in range(60)]
    times = FeedTimes()
    chunks = list(audio_chunks(iter(frames), 0.2, times))
    ends = [round(c.end_s, 6) for c in chunks]
    assert ends == [0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.7]  # grid points, then the last frame's end
    joined = np.concatenate([c.samples for c in chunks])
    assert joined.shape == (60 * 960, 2) and np.array_equal(joined[::960, 0], np.arange(60))
    assert chunks[0].t_s == 0.5 and times.audio_decode_s >= 0.0


def test_fast_pipeline_equals_the_server_loop(replayer: Replayer, recording: SyntheticRecording) -> None:
    assert recording.video is not None
    opts = {"indicator_interval_s": 1.0, "use_asr": False}
    plain = replayer.replay(recording.video, ReplayOptions(fast=False, **opts), keep_features=True)  # type: ignore[arg-type]
    fast = replayer.replay(recording.video, ReplayOptions(fast=True, **opts), keep_features=True)  # type: ignore[arg-type]
    assert plain.audio_features is not None and fast.audio_features is not None
    assert plain.visual_features is not None and fast.visual_features is not None
    assert fast.audio_features.shape == plain.audio_features.shape and len(fast.audio_features) > 20
    # equal but for float rounding (torch runs one thread fewer while the video thread works)
    assert np.allclose(fast.audio_features, plain.audio_features, rtol=1e-5, atol=1e-5)
    assert np.array_equal(fast.visual_features, plain.visual_features)
    assert fast.assessment.total == plain.assessment.total
    assert [ln.text for ln in fast.transcript] == [ln.text for ln in plain.transcript]
    counts = ("video_frames_in", "video_frames_analysed", "faces_found", "speech_segments", "windows_encoded")
    assert {k: fast.stats[k] for k in counts} == {k: plain.stats[k] for k in counts}
    assert fast.stats["audio_chunks_in"] < plain.stats["audio_chunks_in"] / 5  # 200 ms chunks, not 20 ms
    assert [s.media_time_s for s in fast.indicators] == [s.media_time_s for s in plain.indicators]
    for a, b in zip(plain.indicators, fast.indicators, strict=True):
        for key, value in a.values.items():
            assert math.isclose(value, b.values[key], rel_tol=1e-6, abs_tol=1e-9) or value != value, key
    for key, value in plain.session_indicators.items():
        assert fast.session_indicators[key] == pytest.approx(value, rel=1e-9), key
    assert fast.stages["face_tracker"] > 0 and fast.stages["decode_video"] > 0
    # the face tracker is reused from the Replayer's pool, reset: a second replay sees the same vectors
    again = replayer.replay(recording.video, ReplayOptions(fast=True, **opts), keep_features=True)  # type: ignore[arg-type]
    assert again.visual_features is not None
    assert np.array_equal(again.visual_features, fast.visual_features)
    assert math.isnan(plain.stages["decode_video"])  # the plain loop does not time decoding apart
    assert torch.get_num_threads() >= 1


def test_speech_to_text_in_a_worker_gives_the_inline_lines(
    tiny_bundle: Path, wav_y4m: SyntheticRecording, tmp_path: Path
) -> None:
    assert wav_y4m.wav is not None and wav_y4m.y4m is not None
    for src in (wav_y4m.wav, wav_y4m.y4m):
        shutil.copy(src, tmp_path / f"call{src.suffix}")  # no transcript beside them
    source = resolve_source(tmp_path / "call.wav")
    inline_replayer, worker_replayer = Replayer(tiny_bundle), Replayer(tiny_bundle)
    try:
        inline = inline_replayer.replay(source, ReplayOptions(asr_process=False))
        worker = worker_replayer.replay(source, ReplayOptions(asr_process=True))
        again = worker_replayer.replay(source, ReplayOptions(asr_process=True))  # the same worker
        procs = [t._proc for t in worker_replayer._transcribers.values()]  # type: ignore[attr-defined]
    finally:
        inline_replayer.close()
        worker_replayer.close()
    assert inline.transcript, "pocketsphinx should transcribe the espeak-ng answer"
    key = [(ln.start_s, ln.end_s, ln.text, ln.source) for ln in inline.transcript]
    assert [(ln.start_s, ln.end_s, ln.text, ln.source) for ln in worker.transcript] == key
    assert worker.assessment.model.transcript_source == inline.assessment.model.transcript_source
    assert len(again.transcript) >= 1
    assert worker.stages["speech_to_text"] > 0 and inline.stages["speech_to_text"] > 0
    assert worker.stats["transcriber_errors"] == 0 == inline.stats["transcriber_errors"]
    assert len(procs) == 1 and not procs[0].is_alive()  # close() stopped it


def test_profile_table_and_real_time_factor(
    tiny_bundle: Path, recording: SyntheticRecording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert recording.video is not None
    out = tmp_path / "out"
    args = ["replay", str(recording.video), "--bundle", str(tiny_bundle), "--out", str(out)]
    assert main([*args, "--quiet", "--no-report", "--profile"]) == 0
    printed = capsys.readouterr().out
    assert "real-time factor" in printed and "encoder (HuBERT + prosody)" in printed
    assert "model load (once per process)" in printed
    meta = json.loads((out / "rec" / "replay.json").read_text())
    assert meta["real_time_factor"] == pytest.approx(meta["media_s"] / meta["wall_s"])
    assert set(meta["stage_s"]) == {key for key, _, _ in STAGES}
    assert meta["stage_s"]["wall"] == pytest.approx(meta["wall_s"], abs=1e-3)
    assert meta["stage_s"]["model_load"] > 0 and meta["stage_s"]["encoder"] > 0


def test_int8_encoder_option(tiny_bundle: Path, recording: SyntheticRecording) -> None:
    assert recording.video is not None
    fp32, int8 = Replayer(tiny_bundle), Replayer(tiny_bundle, int8=True)
    assert int8.bundle.audio_encoder is not None
    kinds = {type(m).__module__ for m in int8.bundle.audio_encoder.modules()}
    assert any("quantized" in k for k in kinds), kinds
    opts = ReplayOptions(use_asr=False)
    a = fp32.replay(recording.video, opts, keep_features=True).audio_features
    b = int8.replay(recording.video, opts, keep_features=True).audio_features
    assert a is not None and b is not None and a.shape == b.shape
    speech = np.linalg.norm(a, axis=1) > 0
    cos = np.sum(a[speech] * b[speech], axis=1) / (
        np.linalg.norm(a[speech], axis=1) * np.linalg.norm(b[speech], axis=1)
    )
    assert speech.sum() > 5 and float(cos.mean()) > 0.9 and not np.array_equal(a, b)
