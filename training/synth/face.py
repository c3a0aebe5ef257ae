"""Synthetic face video: a crop of ``skimage.data.astronaut()`` animated with landmark-driven warps.

Per frame: local warps around mediapipe face-mesh landmarks of the photo (eyelids close for blinks,
irises shift down for gaze-down, lip corners rise for smiles, lower lip and chin drop with the speech
envelope), then a perspective warp of a planar head (pitch down / yaw / roll sway, small translation).
The landmark positions below were measured once with mediapipe 0.10.21 face mesh on the 512×512 photo
(a test checks they still agree); they are hard-coded so that rendering needs no face tracker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
from skimage import data as skdata

from training.synth.plan import FaceParams
from training.synth.relief import Relief

# (x, y) pixels in astronaut() 512×512 (mediapipe face mesh indices in comments)
LANDMARKS: dict[str, tuple[float, float]] = {
    "eye_r_outer": (195.2, 100.9),  # 33
    "eye_r_inner": (213.3, 103.7),  # 133
    "eye_r_top": (202.8, 97.6),  # 159
    "eye_r_bottom": (203.4, 104.3),  # 145
    "eye_l_inner": (237.0, 104.9),  # 362
    "eye_l_outer": (255.8, 104.3),  # 263
    "eye_l_top": (248.3, 99.7),  # 386
    "eye_l_bottom": (246.6, 106.7),  # 374
    "mouth_r": (201.8, 139.2),  # 61
    "mouth_l": (245.0, 141.0),  # 291
    "lip_lower": (223.0, 150.1),  # 14
    "chin": (221.3, 177.4),  # 152
    "nose_tip": (223.4, 130.0),  # 1
}
CROP = (95, 20, 355, 215)  # x0, y0, x1, y1 of the 260×195 (4:3) crop around the face

FloatImage = npt.NDArray[np.float32]
_SIDE_RE = re.compile(r"_([rl])(?=_|$)")  # the side in a landmark name ("eye_r_top", "mouth_l")


def _other_side(m: re.Match[str]) -> str:
    return "_l" if m.group(1) == "r" else "_r"


@dataclass(frozen=True)
class FaceTimeline:
    """Per-frame animation channels (each (T,))."""

    times: npt.NDArray[np.float64]
    pitch: FloatImage  # degrees, > 0 = head down
    yaw: FloatImage
    roll: FloatImage
    blink: FloatImage  # eyelid closure 0–1
    gaze_down: FloatImage  # 0–1
    smile: FloatImage  # -1 (corners down) … 1 (full smile); the photo itself smiles at 0
    mouth_open: FloatImage  # 0–1

    def channel_means(self) -> dict[str, float]:
        return {
            "head_pitch_deg": float(self.pitch.mean()),
            "gaze_down_share": float((self.gaze_down > 0.5).mean()),
            "smile_share": float((self.smile > 0.5).mean()),
            "eyes_closed_share": float((self.blink > 0.5).mean()),
            "head_motion_deg": float(np.abs(np.diff(self.yaw)).mean() + np.abs(np.diff(self.pitch)).mean())
            if len(self.times) > 1
            else 0.0,
        }


def _episodes(
    rng: np.random.Generator, times: npt.NDArray[np.float64], per_min: float, dur: tuple[float, float]
) -> tuple[FloatImage, list[tuple[float, float]]]:
    """Raised-cosine episodes at a Poisson rate; returns the envelope and the (start, end) list."""
    env = np.zeros(len(times), dtype=np.float32)
    spans: list[tuple[float, float]] = []
    if per_min <= 0 or len(times) == 0:
        return env, spans
    t, end = 0.0, float(times[-1])
    while True:
        t += float(rng.exponential(60.0 / per_min))
        if t >= end:
            break
        d = float(rng.uniform(*dur))
        spans.append((t, t + d))
        inside = (times >= t) & (times <= t + d)
        env[inside] = np.maximum(env[inside], np.sin(np.pi * (times[inside] - t) / d) ** 0.5)
        t += d
    return env, spans


def _share_episodes(rng: np.random.Generator, times: npt.NDArray[np.float64], share: float) -> FloatImage:
    """On/off episodes (1–3 s) covering about ``share`` of the time, with soft edges."""
    if share <= 0:
        return np.zeros(len(times), dtype=np.float32)
    mean_on = 2.0
    per_min = 60.0 * share / mean_on
    env, _ = _episodes(rng, times, per_min / max(1e-3, 1 - share), (1.0, 3.0))
    return np.clip(env * 1.6, 0.0, 1.0)


def make_timeline(
    params: FaceParams, times: npt.NDArray[np.float64], envelope: FloatImage, rng: np.random.Generator
) -> FaceTimeline:
    """Sample the planted behaviour at the frame times (``envelope``: speech RMS per frame)."""
    n = len(times)

    def smooth_noise(scale: float, period_s: float) -> FloatImage:
        knots = np.arange(0.0, float(times[-1]) + 2 * period_s if n else 1.0, period_s)
        vals = rng.normal(0.0, scale, len(knots))
        return np.interp(times, knots, vals).astype(np.float32)

    m = params.motion_deg
    blink_env, _ = _episodes(rng, times, params.blinks_per_min, (params.blink_s * 0.8, params.blink_s * 1.2))
    smile_env, _ = _episodes(rng, times, params.smiles_per_min, (1.5, 3.0))
    gaze = _share_episodes(rng, times, params.gaze_down_share)
    nods = smooth_noise(0.5 * m, 1.5)
    return FaceTimeline(
        times=times,
        pitch=(params.head_pitch_deg + nods + 3.0 * gaze).astype(np.float32),
        yaw=smooth_noise(1.2 * m, 2.0),
        roll=smooth_noise(0.4 * m, 3.0),
        blink=np.clip(blink_env * 1.3, 0.0, 1.0).astype(np.float32),
        gaze_down=gaze,
        smile=(smile_env - params.sadness).astype(np.float32),
        mouth_open=np.clip(envelope * (0.6 + 0.4 * np.abs(np.sin(times * 11.0))), 0.0, 1.0).astype(
            np.float32
        ),
    )


class FaceRig:
    """Renders frames of the animated face at ``width``×``height``."""

    def __init__(
        self, width: int = 320, height: int = 240, *, mirror: bool = False, head: str = "plane"
    ) -> None:
        """``mirror``: the photo flipped left↔right (the content-held-out test split's face).

        ``head``: "plane" (the corpus default: the photo as a flat plane under a perspective warp, with
        the nose tip pushed along for parallax) or "relief" (the photo on a 3D head relief, see
        :class:`~training.synth.relief.Relief`, rotated about the head centre: real parallax in all
        three axes; used by ``bench/visual_validation.py``). The plane's yaw does not read as yaw to
        a landmark model (its keystone turns the face one way and its nose shift the other).
        """
        if head not in ("plane", "relief"):
            raise ValueError(f"head must be 'plane' or 'relief', not {head!r}")
        x0, y0, x1, y1 = CROP
        self.width, self.height = width, height
        self.head = head
        self.scale = width / (x1 - x0)
        crop = skdata.astronaut()[y0:y1, x0:x1]
        landmarks = LANDMARKS
        if mirror:  # flip the crop; a landmark's x mirrors and its left/right name swaps
            crop = np.ascontiguousarray(crop[:, ::-1])
            landmarks = {_SIDE_RE.sub(_other_side, k): (x0 + x1 - x, y) for k, (x, y) in LANDMARKS.items()}
        self.base = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
        self.lm = {
            k: ((x - x0) * self.scale, (y - y0) * self.scale * height / width / ((y1 - y0) / (x1 - x0)))
            for k, (x, y) in landmarks.items()
        }
        mw = self.lm["mouth_l"][0] - self.lm["mouth_r"][0]
        self.mouth_w = mw
        # local warps touch only a box around the landmarks (absolute pixel coordinates inside it)
        xs, ys = [p[0] for p in self.lm.values()], [p[1] for p in self.lm.values()]
        bx0, by0 = max(0, int(min(xs) - 0.6 * mw)), max(0, int(min(ys) - 0.6 * mw))
        bx1, by1 = min(width, int(max(xs) + 0.6 * mw)), min(height, int(max(ys) + 0.5 * mw))
        self.box = (bx0, by0, bx1, by1)
        gy, gx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
        self.gx, self.gy = gx, gy

        # Gaussian bases for the mouth warps (backward maps: dst samples src = dst - displacement)
        def bump(name: str, sigma: float) -> FloatImage:
            cx, cy = self.lm[name]
            return np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)

        self.b_mr, self.b_ml = bump("mouth_r", 0.22 * mw), bump("mouth_l", 0.22 * mw)
        self.b_lip, self.b_chin = bump("lip_lower", 0.3 * mw), bump("chin", 0.45 * mw)
        self.b_nose = bump("nose_tip", 0.3 * mw)
        self.eyes = [self._eye_geometry("r"), self._eye_geometry("l")]
        self.relief = Relief.for_face(self.lm, width, height) if head == "relief" else None

    def _eye_geometry(self, side: str) -> tuple[float, float, float, float, float]:
        xs = [self.lm[f"eye_{side}_{k}"][0] for k in ("outer", "inner")]
        top, bottom = self.lm[f"eye_{side}_top"][1], self.lm[f"eye_{side}_bottom"][1]
        cx = (xs[0] + xs[1]) / 2
        hw = abs(xs[0] - xs[1]) / 2 * 1.25
        return cx, hw, top, bottom, (bottom - top)

    def _eye_maps(self, mx: FloatImage, my: FloatImage, blink: float, gaze: float) -> None:
        """Edit the backward maps in place: iris down by ``gaze``, upper lid down by ``blink``."""
        for cx, hw, top, bottom, h in self.eyes:
            m = 1.2 * h  # skin above the eye stretched over it when the lid drops
            bx0, by0 = self.box[0], self.box[1]
            x0, x1 = int(cx - hw) - 1 - bx0, int(cx + hw) + 2 - bx0
            y0, y1 = int(top - m) - 1 - by0, int(bottom + 0.6 * h) + 2 - by0
            gx, gy = self.gx[y0:y1, x0:x1], self.gy[y0:y1, x0:x1]
            wx = np.clip(1.0 - ((gx - cx) / hw) ** 2, 0.0, 1.0)  # taper toward the corners
            sub = my[y0:y1, x0:x1]
            if gaze > 0:  # iris moves down: sample from above, inside the eye opening
                inside = np.clip(1.5 - np.abs(gy - (top + bottom) / 2) / h, 0.0, 1.0)
                sub -= gaze * 0.9 * h * wx * inside
            blink = max(blink, 0.3 * gaze)  # the upper lid follows a downward gaze
            if blink > 0:
                lid = top + blink * (h + 0.3 * h) * wx  # lid line per column
                upper = (gy >= top - m) & (gy <= lid)
                src = (top - m) + (gy - (top - m)) * m / np.maximum(lid - (top - m), 1e-3)
                sub[upper] = src[upper]

    def render(self, tl: FaceTimeline, i: int) -> npt.NDArray[np.uint8]:
        """Frame ``i`` of the timeline, (H, W, 3) RGB uint8."""
        mw = self.mouth_w
        s, o = float(tl.smile[i]), float(tl.mouth_open[i])
        # lip corners: up and outward for smiles; lower lip and chin: down with speech
        sp, sy = np.sin(np.radians(float(tl.pitch[i]))), np.sin(np.radians(float(tl.yaw[i])))
        if self.relief is not None:  # the relief's depth gives the parallax
            sp = sy = 0.0
        dx = s * 0.10 * mw * (self.b_ml - self.b_mr) + 0.9 * mw * sy * self.b_nose
        dy = (
            -s * 0.09 * mw * (self.b_ml + self.b_mr)
            + o * 0.11 * mw * self.b_lip
            + o * 0.06 * mw * self.b_chin
        )
        dy = (
            dy + 0.9 * mw * sp * self.b_nose
        )  # the nose tip sits in front of the eyes: it drops as the head bows
        mx, my = self.gx - dx, self.gy - dy
        self._eye_maps(mx, my, float(tl.blink[i]), float(tl.gaze_down[i]))
        img = self.base.copy()
        bx0, by0, bx1, by1 = self.box
        img[by0:by1, bx0:bx1] = cv2.remap(self.base, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if self.relief is not None:
            rx, ry = self.relief.maps(float(tl.pitch[i]), float(tl.yaw[i]), float(tl.roll[i]))
            out = cv2.remap(img, rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            return np.asarray(out, dtype=np.uint8)
        hmat = self._head_homography(float(tl.pitch[i]), float(tl.yaw[i]), float(tl.roll[i]))
        out = cv2.warpPerspective(img, hmat, (self.width, self.height), borderMode=cv2.BORDER_REFLECT)
        return np.asarray(out, dtype=np.uint8)

    def _head_homography(self, pitch: float, yaw: float, roll: float) -> npt.NDArray[np.float64]:
        """Perspective image of the face plane rotated about the nose (pitch > 0 = forehead forward)."""
        cx, cy = self.lm["nose_tip"]
        f = float(self.width)
        p, y, r = np.radians([pitch, yaw, roll])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        rot = rz @ ry @ rx
        w, h = self.width, self.height
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        pts = np.column_stack([src[:, 0] - cx, src[:, 1] - cy, np.zeros(4)]) @ rot.T  # (4, 3)
        z = f + pts[:, 2]
        shift = np.array([0.0, 0.9 * pitch * self.scale])  # the head also drops a little as it bows
        dst = np.column_stack([f * pts[:, 0] / z + cx, f * pts[:, 1] / z + cy]) + shift
        hmat = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        return np.asarray(hmat, dtype=np.float64)

    def frames(self, tl: FaceTimeline) -> Iterator[npt.NDArray[np.uint8]]:
        for i in range(len(tl.times)):
            yield self.render(tl, i)


def write_video(
    path: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: float, width: int, height: int
) -> int:
    """Encode RGB frames as H.264 MP4 (single-threaded x264: byte-identical output for a seed)."""
    n = 0
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20", "threads": "1"}
        stream.codec_context.thread_count = 1
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return n
