"""Recording decoding: 20 ms source-rate audio frames, pts-stamped video, thinning, source resolution."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from client_sdk.synth import SyntheticRecording, make_recording
from mllmdr_core.errors import MediaError
from mllmdr_core.media import (
    AudioFrame,
    VideoFrame,
    find_sources,
    iter_audio,
    iter_frames,
    iter_video,
    probe_duration,
    resolve_source,
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRecording:
    """A 6 s mp4 (h264 + aac, 320x240 at 15 fps) with its transcript beside it."""
    return make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, name="rec", container="mp4")


@pytest.fixture(scope="module")
def wav_y4m(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRecording:
    """The same kind of interview as a wav + y4m pair."""
    return make_recording(tmp_path_factory.mktemp("pair"), duration_s=6.0, name="pair", wav_y4m=True)


def test_audio_frames_are_20ms_at_source_rate(recording: SyntheticRecording) -> None:
    assert recording.video is not None
    frames = list(iter_audio(recording.video))
    assert all(f.sample_rate == 48000 and f.channels == 1 for f in frames)
    assert all(f.samples.shape == (960, 1) and f.samples.dtype == np.int16 for f in frames[:-1])
    steps = np.diff([f.t_s for f in frames])
    assert np.allclose(steps, 0.02)
    total = sum(len(f.samples) for f in frames) / 48000
    assert 5.9 <= total <= 6.1
    loud = max(int(np.abs(f.samples).max()) for f in frames)
    assert loud > 3000  # the espeak-ng answer is in there, not just room noise


def test_video_frames_pts_and_thinning(recording: SyntheticRecording) -> None:
    assert recording.video is not None
    frames = list(iter_video(recording.video))
    assert len(frames) == 90 and frames[0].rgb.shape == (240, 320, 3)
    assert frames[1].t_s == pytest.approx(1 / 15, abs=1e-3)
    thinned = list(iter_video(recording.video, analysis_fps=5.0))
    # keep a frame when ≥ 0.9/5 s passed since the last kept one, like stream_server.ingest
    assert len(thinned) == 30
    assert all(b.t_s - a.t_s >= 0.18 - 1e-9 for a, b in itertools.pairwise(thinned))
    # the face photo is in the frame: not a flat canvas
    assert frames[0].rgb.std() > 20


def test_merged_stream_is_time_ordered(wav_y4m: SyntheticRecording) -> None:
    assert wav_y4m.wav is not None
    src = resolve_source(wav_y4m.wav)
    assert src.video == wav_y4m.y4m and src.transcript == wav_y4m.transcript
    frames = list(iter_frames(src, max_s=2.0))
    times = [f.t_s for f in frames]
    assert times == sorted(times) and max(times) < 2.0
    assert {type(f) for f in frames} == {AudioFrame, VideoFrame}
    assert probe_duration(src) == pytest.approx(6.0, abs=0.05)


def test_resolve_sources(tmp_path: Path, recording: SyntheticRecording) -> None:
    assert recording.video is not None
    src = resolve_source(recording.video)
    assert (src.session_id, src.audio, src.video) == ("rec", recording.video, recording.video)
    assert src.transcript == recording.transcript
    daic = tmp_path / "300_P"
    daic.mkdir()
    (daic / "300_AUDIO.wav").write_bytes(b"")
    (daic / "300_TRANSCRIPT.csv").write_text("start_time\tstop_time\tspeaker\tvalue\n")
    edaic = tmp_path / "600_P"
    edaic.mkdir()
    (edaic / "600_AUDIO.wav").write_bytes(b"")
    (edaic / "600_Transcript.csv").write_text("Start_Time,End_Time,Text,Confidence\n")
    found = {s.session_id: s for s in find_sources(tmp_path)}
    assert found["300"].kind == "daic-woz" and found["300"].transcript == daic / "300_TRANSCRIPT.csv"
    assert found["600"].kind == "e-daic" and found["600"].video is None


def test_bad_media_raises_media_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match=r"junk\.mp4"):
        resolve_source(junk)
    with pytest.raises(MediaError, match="no such file"):
        resolve_source(tmp_path / "missing.mkv")
    junk.unlink()
    with pytest.raises(MediaError, match="no recording"):
        resolve_source(tmp_path)
