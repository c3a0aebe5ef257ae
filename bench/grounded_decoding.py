"""Decode cost and grounding of grounded decoding (issue 18) on the demo bundle, embedded backend.

Run: ``.venv/bin/python bench/grounded_decoding.py [--bundle bundles/demo] [--repeats 3]``.
Prints ONE JSON line: per mode (``off``: free greedy decoding, ``on``: ``assess.grounded_decoding``)
the median wall and CPU seconds (process time, all threads) of one 8-item ``Assessor.assess`` and of
its ``generate_ms``, the tokens of the 8 replies (re-tokenised), the items' mean and lowest grounding;
how many items differ from free decoding; the load average before and after. Not in the bench table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import time

import numpy as np

from mllmdr_core.assess import Assessor
from mllmdr_core.bundle import LoadedBundle, load_bundle
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot

# a synthetic interview: each answer holds words and numbers the demo's rationales like to cite
EXCHANGES = [
    ("Have you lost interest or pleasure in things you used to enjoy?", "I stopped going to football."),
    ("How has your mood been lately?", "Pretty low most days, maybe five days a week."),
    ("How easy is it for you to get a good night's sleep?", "Not easy, I wake up at three every night."),
    ("How has your energy been? Do you feel tired during the day?", "I feel tired all the time."),
    ("Have you noticed any changes in your appetite or eating?", "I barely eat anything these days."),
    ("How do you feel about yourself these days?", "Like a failure, honestly."),
    ("Is it hard to concentrate on things like reading or TV?", "I read the same page 10 times."),
    ("Have others noticed you moving or speaking more slowly?", "My wife says I talk slower."),
]


def snapshot(bundle: LoadedBundle) -> SessionSnapshot:
    lines: list[TranscriptLine] = []
    t = 0.0
    for question, answer in EXCHANGES:
        lines.append(TranscriptLine(t, t + 2.0, "clinician", question, source="captions"))
        lines.append(TranscriptLine(t + 2.5, t + 5.0, "patient", answer, source="captions"))
        t += 6.0
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((300, bundle.model.audio_dim)).astype(np.float32)
    visual = rng.standard_normal((300, bundle.model.visual_dim)).astype(np.float32)
    return SessionSnapshot.of(audio=audio, visual=visual, transcript=lines, window=(0.0, t))


def with_option(bundle: LoadedBundle, on: bool) -> LoadedBundle:
    config = copy.deepcopy(bundle.config)
    config.assess.grounded_decoding = on
    return dataclasses.replace(bundle, config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundles/demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--show", action="store_true", help="also print the 8 replies of each mode")
    args = parser.parse_args()
    load_before = os.getloadavg()
    bundle = load_bundle(args.bundle)
    snap = snapshot(bundle)
    out: dict[str, object] = {"bundle": bundle.bundle_id, "items": 8, "repeats": args.repeats}
    texts: dict[str, list[str]] = {}
    for mode in ("off", "on"):
        assessor = Assessor(with_option(bundle, mode == "on"))
        assessor.assess(snap, session_id="warm", kind="checkpoint")  # warm-up (vocab tables, caches)
        walls, cpus, gens = [], [], []
        for _ in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            result = assessor.assess(snap, session_id="b", kind="checkpoint")
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            gens.append(result.timings_ms["generate_ms"] / 1000)
        texts[mode] = [it.raw_text for it in result.items]
        grounding = [it.grounding.score for it in result.items if it.grounding is not None]
        tokens = [len(assessor.model.tokenizer(t)["input_ids"]) for t in texts[mode]]
        out[mode] = {
            "wall_s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3),
            "generate_wall_s": round(statistics.median(gens), 3),
            "generated_tokens": sum(o for o in tokens),
            "grounding_mean": round(statistics.mean(g for g in grounding), 3),
            "grounding_min": min(grounding),
        }
    off, on = out["off"], out["on"]
    assert isinstance(off, dict) and isinstance(on, dict)
    out["slowdown_wall"] = round(on["wall_s"] / off["wall_s"], 2)
    out["slowdown_cpu"] = round(on["cpu_s"] / off["cpu_s"], 2)
    out["items_changed"] = sum(a != b for a, b in zip(texts["off"], texts["on"], strict=True))
    out["loadavg_before"] = load_before[0]
    out["loadavg_after"] = os.getloadavg()[0]
    out["utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(out))
    if args.show:
        for a, b in zip(texts["off"], texts["on"], strict=True):
            print(f"off: {a}\non:  {b}\n")


if __name__ == "__main__":
    main()
