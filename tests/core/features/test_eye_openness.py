"""The eye-openness pass on decoded frames' luma planes (no RGB conversion of the thinned-out frames):
the same grey values and the same blinks as through RGB, on a planted session; the switch that turns it
off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from mllmdr_core.config import MllmdrConfig, VisualConfig
from mllmdr_core.features.eye_openness import EyeOpenness
from mllmdr_core.features.face import make_face_tracker
from mllmdr_core.features.indicators import BLINK_OPENNESS
from mllmdr_core.media import eye_frame, iter_video, luma_plane, to_rgb
from mllmdr_core.session_state import SessionState
from training.synth.planted import LOW, Rendered, render_planted

FPS = 2.5


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render_planted(LOW, tmp_path_factory.mktemp("planted"), 16.0, FPS)


def _frames(path: Path) -> Iterator[av.VideoFrame]:
    with av.open(str(path)) as container:
        yield from container.decode(container.streams.video[0])


def test_luma_patches_read_the_grey_of_the_rgb_route(planted: Rendered) -> None:
    boxes = [(0.3, 0.3, 0.45, 0.4), (0.55, 0.3, 0.7, 0.4), (0.0, 0.0, 1.0, 1.0)]
    diffs = []
    for k, frame in enumerate(_frames(planted.video)):
        if k % 20:
            continue
        luma, rgb = luma_plane(frame), to_rgb(frame)
        assert luma is not None and (luma.width, luma.height) == (320, 240) and not luma.full_range
        for box in boxes:
            a, b = int(box[0] * 320), int(np.ceil(box[2] * 320))
            c, d = int(box[1] * 240), int(np.ceil(box[3] * 240))
            grey = cv2.cvtColor(np.ascontiguousarray(rgb[c:d, a:b]), cv2.COLOR_RGB2GRAY).astype(np.float32)
            patch = luma.grey(box)
            assert patch is not None and patch.shape == grey.shape
            diffs.append(np.abs(patch - grey))
    every = np.concatenate([d.ravel() for d in diffs])
    assert every.mean() < 2.0 and every.max() <= 8.0  # swscale's rounding and clipping, not a bias


def test_blinks_through_luma_equal_those_through_rgb_and_the_plant(planted: Rendered) -> None:
    tracker = make_face_tracker(VisualConfig(analysis_fps=FPS))
    by_luma, by_rgb = EyeOpenness(), EyeOpenness()
    series: dict[str, list[float]] = {"luma": [], "rgb": []}
    last = -1e9
    try:
        for frame in _frames(planted.video):
            t_s = float(frame.pts * frame.time_base)
            luma, rgb = luma_plane(frame), to_rgb(frame)
            assert luma is not None
            if t_s - last >= 0.9 / FPS:  # the ingest's thinning: the mesh frames
                last = t_s
                obs = tracker.process(rgb, t_s)
                by_luma.reference(luma, obs.landmarks if obs.present else None)
                by_rgb.reference(rgb, obs.landmarks if obs.present else None)
            for name, eyes, image in (("luma", by_luma, luma), ("rgb", by_rgb, rgb)):
                value = eyes.measure(image)
                series[name].append(np.nan if value is None else value)
    finally:
        tracker.close()
    luma_s, rgb_s = np.array(series["luma"]), np.array(series["rgb"])
    assert np.array_equal(np.isnan(luma_s), np.isnan(rgb_s)) and np.isfinite(luma_s).mean() > 0.9
    assert np.nanmax(np.abs(luma_s - rgb_s)) < 0.05

    def closures(x: np.ndarray) -> int:
        shut = np.nan_to_num(x, nan=1.0) < BLINK_OPENNESS
        return int((shut[1:] & ~shut[:-1]).sum())

    planted_blinks = round(planted.plant["blink_rate_per_min"] * planted.duration_s / 60.0)
    assert planted_blinks >= 2 and closures(luma_s) == closures(rgb_s) == planted_blinks


def test_thinned_out_frames_come_as_their_luma_plane_only(planted: Rendered) -> None:
    frames = list(iter_video(planted.video, analysis_fps=FPS, eye_frames=True, max_s=2.0))
    kept = [f for f in frames if f.kept]
    assert len(frames) == 60 and len(kept) == 6  # one in 11 (≥ 0.9 / 2.5 s apart)
    assert all(f.rgb.shape == (240, 320, 3) and f.luma is not None for f in kept)
    assert all(f.rgb.size == 0 and f.eye_image is f.luma is not None for f in frames if not f.kept)
    assert all(f.luma is None for f in iter_video(planted.video, analysis_fps=FPS, max_s=1.0))


def test_formats_without_a_luma_plane_fall_back_to_rgb() -> None:
    img = np.ascontiguousarray(data.astronaut()[::4, ::4])
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    assert luma_plane(frame) is None
    thinned = eye_frame(frame, 0.5)
    assert thinned.luma is None and not thinned.kept and np.array_equal(thinned.eye_image, img)
    yuv = frame.reformat(format="yuvj420p")
    luma = luma_plane(yuv)
    assert luma is not None and luma.full_range and eye_frame(yuv, 0.5).rgb.size == 0


def test_eye_pass_off_reads_no_frame() -> None:
    cfg = MllmdrConfig(visual=VisualConfig(eye_pass=False))
    state = SessionState(cfg, session_id="no-eye-pass")
    img = np.ascontiguousarray(data.astronaut())
    for k in range(30):
        state.push_video(img, k / 30.0)
    state.push_eye_frame(img, 1.01)
    state.add_eye(1.02, 1.0)
    st = state.stats
    assert st["eye_frames"] == 0 and st["eye_s"] == 0.0 and st["video_frames_analysed"] == 5
    assert state.indicators(30.0)["blink_rate_per_min"] == 0.0  # the analysed frames' blink flag
    state.close()
