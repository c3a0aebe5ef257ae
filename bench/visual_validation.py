"""Planted vs measured for the live "visual-v2" tracker (issue 19 item 2).

Run: ``.venv/bin/python bench/visual_validation.py [--blink-s 60]`` → prints the table and writes
``bench/results/visual_validation.json``. Sequences and method: ``training/synth/visual_check.py``
(synthetic relief head, 320×240). Targets: pose change within 3° of the plant over ±15° per axis;
blink count within ±1 per minute at the analysed rate; Pearson r ≥ 0.8 for smile → AU12 and jaw →
AU25 / AU26. Also the tracker's cost per analysed frame (ms, mean over every relief-head frame of the
run) and, for the record, a yaw sweep on the corpus's default *plane* head (which does not really turn).
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

from training.synth.visual_check import Checker

TARGETS = {"pose_max_abs_error_deg": 3.0, "blink_error_per_min": 1.0, "min_r": 0.8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blink-s", type=float, default=60.0, help="blink train length (s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    chk = Checker()
    try:
        pose = {axis: chk.pose_sweep(axis) for axis in ("pitch", "yaw", "roll")}
        smile = chk.ramp("smile", -1.0, 1.0, ("AU12_r",))
        jaw = chk.ramp("mouth_open", 0.0, 1.0, ("AU25_r", "AU26_r"))
        blinks = {f"{fps:g}": chk.blink_train(args.blink_s, fps) for fps in (10.0, 5.0, 2.5)}
    finally:
        chk.close()
    plane = Checker(head="plane")  # the corpus's default head: does its yaw read as yaw?
    try:
        plane_yaw = plane.pose_sweep("yaw")
    finally:
        plane.close()
    r = {"smile→AU12": smile["AU12_r"]["r"], "jaw→AU25": jaw["AU25_r"]["r"], "jaw→AU26": jaw["AU26_r"]["r"]}
    met = {
        "pose": all(p["max_abs_error_deg"] <= TARGETS["pose_max_abs_error_deg"] for p in pose.values()),
        "blinks_10fps": blinks["10"]["error_per_min"] <= TARGETS["blink_error_per_min"],
        "correlations": all(v >= TARGETS["min_r"] for v in r.values()),
    }
    ms = 1000.0 * float(np.mean(chk.track_s))
    for axis, p in pose.items():
        print(
            f"{axis:5s} planted {p['planted_deg']}  measured {p['measured_deg']}"
            f"  neutral {p['neutral_reading_deg']}  max|err| {p['max_abs_error_deg']}°"
            f"  slope {p['slope']}  cross-talk {p['max_cross_talk_deg']}°"
        )
    for fps, b in blinks.items():
        print(
            f"blinks @{fps} fps: planted {b['planted']} measured {b['measured']}"
            f" ({b['error_per_min']}/min off)"
        )
    print(
        f"plane head (corpus default) yaw: planted {plane_yaw['planted_deg']}",
        f"measured {plane_yaw['measured_deg']}",
    )
    print("correlations", r, " pitch drift on the jaw ramp", jaw["pitch_drift_deg"], "°")
    print("met", met, f" tracker {ms:.1f} ms/frame over {len(chk.track_s)} frames")
    common.write_result(
        "visual_validation",
        {
            "targets": TARGETS,
            "met": met,
            "pose": pose,
            "plane_head_yaw": plane_yaw,
            "blinks": blinks,
            "smile_ramp": smile,
            "jaw_ramp": jaw,
            "correlations": r,
            "tracker_ms_per_frame": round(ms, 2),
            "frames": len(chk.track_s),
            "wall_s": round(time.perf_counter() - t0, 1),
        },
    )


if __name__ == "__main__":
    main()
