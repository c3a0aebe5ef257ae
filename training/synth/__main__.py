"""``python -m training.synth --out DIR --n N --seed S --fps F``: write a synthetic corpus (the sessions
``DIR`` lacks)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from training.synth.corpus import SynthConfig, generate_corpus


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__)
    ap.add_argument("--out", required=True, help="output folder (DAIC-WOZ layout)")
    ap.add_argument("--n", type=int, default=8, help="number of sessions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--audio-speakers", choices=("patient", "both"), default="patient")
    ap.add_argument("--words-neutral-share", type=float, default=0.2)
    ap.add_argument("--media-neutral-share", type=float, default=0.1)
    ap.add_argument("--test-sessions", type=int, default=0, help="extra test-only sessions after the n")
    ap.add_argument("--test-words-neutral-share", type=float, help="masked share of the test split")
    ap.add_argument("--test-round", type=int, default=1, help="fresh test split k (retires rounds < k)")
    ap.add_argument(
        "--earlier-test-sessions", type=int, nargs="*", default=[], help="test-only sessions of rounds < k"
    )
    ap.add_argument(
        "--no-held-out", action="store_true", help="test split from the training banks (not content-held-out)"
    )
    ap.add_argument("--no-video", action="store_true", help="skip the video (audio + transcript only)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    cfg = SynthConfig(
        n=a.n,
        seed=a.seed,
        fps=a.fps,
        width=a.width,
        height=a.height,
        audio_speakers=a.audio_speakers,
        words_neutral_share=a.words_neutral_share,
        media_neutral_share=a.media_neutral_share,
        video=not a.no_video,
        held_out_test=not a.no_held_out,
        test_sessions=a.test_sessions,
        test_words_neutral_share=a.test_words_neutral_share,
        test_round=a.test_round,
        earlier_test_sessions=tuple(a.earlier_test_sessions),
    )
    summary = generate_corpus(cfg, a.out, workers=a.workers, progress=not a.quiet)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
