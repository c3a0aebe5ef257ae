"""Live vs replay speech-to-text: does the same recording give the same transcript and scores?

Run: ``.venv/bin/python bench/stt_agreement.py [--answers 8] [--quick]``.
Prints the figures and writes ``bench/results/stt_agreement.json``.

The recording: one session of the project's synthetic generator (``training.synth``, patient voice only,
16 kHz mono WAV, no captions, no transcript file), run with the demo bundle and the default recogniser
through four paths:

- ``live``: the real server (``python -m stream_server``, transcript source ``auto``: the default), the
  Python SDK's ``publish_file`` over a real aiortc peer (Opus, 48 kHz, 20 ms frames, real time); the
  transcript is the stored one once the server's speech-to-text has drained.
- ``replay``: ``mllmdr replay``'s default, the offline pipeline (200 ms chunks, recogniser in a worker
  process beside the replay).
- ``replay_loop``: replay through the server's 20 ms loop (``ReplayOptions(fast=False)``).
- ``replay_again``: ``replay`` a second time with the same ``Replayer`` (a batch reuses it).

Agreement of each path with ``replay``: word error rate of its transcript against ``replay``'s (lower
case, punctuation removed), whether the 8 item scores and the total equal, and the WER of each path
against the planted transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import API_KEY, DEMO_BUNDLE, load_avg, server_process, write_result
from mllmdr_core.assessment import Assessment
from mllmdr_core.features.transcribe import word_errors
from mllmdr_core.frames import TranscriptLine


def recording(work: Path, answers: int, index: int = 0) -> tuple[Path, str]:
    """(patient-voice WAV of a synthetic session, its planted patient text)."""
    from bench.prompt_coverage import plan, render
    from training.data.wav import write_wav

    session = render(plan(index, minutes=0, answers=answers))
    path = work / f"session-{index}.wav"
    write_wav(path, session.patient + np.float32(0.0), 16000)
    planted = " ".join(ln.text for ln in session.planted if ln.speaker == "patient")
    return path, planted


def wave_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def text_of(lines: list[TranscriptLine] | list[Any]) -> str:
    return " ".join(ln.text for ln in sorted(lines, key=lambda ln: ln.start_s) if ln.speaker != "clinician")


def wer(reference: str, hypothesis: str) -> float | None:
    errors, words = word_errors(reference, hypothesis)
    return round(errors / words, 4) if words else None


def scores(a: Assessment) -> dict[str, Any]:
    return {"items": {i.key: i.score for i in a.items}, "total": a.total}


async def live(path: Path, work: Path) -> tuple[str, Assessment]:
    """The recording through the real server over WebRTC; (patient transcript, final assessment)."""
    from client_sdk.session import Session

    async with (
        server_process(DEMO_BUNDLE, work, transcript_source="auto") as srv,
        await Session.create(srv.base, API_KEY) as session,
    ):
        await session.publish_file(path)
        await session.wait_media_ended(timeout_s=600)
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 6.0:  # until the speech-to-text queue has drained
            n = len((await session.export()).transcript)
            if n != last:
                last, stable_since = n, time.monotonic()
            await asyncio.sleep(1.0)
        final = await session.end()
        export = await session.export()
    assert final is not None
    return text_of(export.transcript), final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--answers", type=int, default=8, help="answers in the session (default 8)")
    p.add_argument("--quick", action="store_true", help="4 answers")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.answers = 4
    from client_sdk.replay import Replayer, ReplayOptions
    from stream_server.app import limit_ice_host_addresses

    limit_ice_host_addresses(["127.0.0.1"])
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mllmdr-stt-"))
    path, planted = recording(work, args.answers)
    texts: dict[str, str] = {}
    results: dict[str, Assessment] = {}
    replayer = Replayer(DEMO_BUNDLE)
    try:
        for name, opts in (
            ("replay", ReplayOptions()),
            ("replay_again", ReplayOptions()),
            ("replay_loop", ReplayOptions(fast=False)),
        ):
            r = replayer.replay(path, opts)
            texts[name], results[name] = text_of(r.transcript), r.assessment
            print(f"{name}: {len(texts[name].split())} words, total {r.assessment.total}")
    finally:
        replayer.close()
    texts["live"], results["live"] = asyncio.run(live(path, work / "server"))
    print(f"live: {len(texts['live'].split())} words, total {results['live'].total}")
    base = scores(results["replay"])
    paths: dict[str, Any] = {}
    for name in ("replay", "replay_again", "replay_loop", "live"):
        got = scores(results[name])
        paths[name] = {
            "words": len(texts[name].split()),
            "wer_vs_planted": wer(planted, texts[name]),
            "wer_vs_replay": wer(texts["replay"], texts[name]),
            "identical_transcript": texts[name] == texts["replay"],
            "scores": got,
            "items_equal": sum(got["items"][k] == base["items"][k] for k in base["items"]),
            "total_equal": got["total"] == base["total"],
            "text": texts[name],
        }
    for name, row in paths.items():
        print(f"{name:13s} WER vs replay {row['wer_vs_replay']}, vs planted {row['wer_vs_planted']}, "
              f"items equal {row['items_equal']}/8, total {row['scores']['total']}")
    print(f"wall {time.perf_counter() - started:.0f} s, load {load_avg()}")
    if not args.no_write:
        out = write_result("stt_agreement", {
            "answers": args.answers, "bundle": DEMO_BUNDLE.name, "recogniser": "pocketsphinx",
            "audio_s": round(wave_seconds(path), 1),
            "planted_words": len(planted.split()), "paths": paths,
            "wall_s": round(time.perf_counter() - started, 1),
        })
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
