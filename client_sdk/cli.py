"""``mllmdr`` command line: ``publish`` a recording or camera, ``watch`` a session's events, ``replay``
recordings offline (one, or a batch with workers, resume, summary CSV and evaluation).

Environment defaults: ``MLLMDR_SERVER`` (server URL), ``MLLMDR_API_KEY``, ``MLLMDR_BUNDLE`` (bundle dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mllmdr_core.errors import MllmdrError

if TYPE_CHECKING:
    from client_sdk.session import Session
    from mllmdr_core.frames import TranscriptLine

DEFAULT_SERVER = "http://127.0.0.1:8765"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mllmdr", description="MLlm-DR Live client: publish, watch, replay.")
    sub = p.add_subparsers(dest="command", required=True)

    pub = sub.add_parser("publish", help="publish a recording (or the camera) to a new live session")
    pub.add_argument("file", nargs="?", help="video file (mp4/webm/mkv…) or wav (+ same-stem .y4m)")
    pub.add_argument("--camera", action="store_true", help="publish the local camera + microphone instead")
    pub.add_argument("--video", help="separate video file (e.g. a .y4m) to pair with an audio FILE")
    pub.add_argument("--transcript", help="send this transcript's lines as captions in real time")
    pub.add_argument(
        "--interviewer-channel",
        choices=("left", "right"),
        help="two-party recording: this stereo channel is the interviewer (the other the patient)",
    )
    pub.add_argument("--interviewer", help="two-party: the interviewer's own audio file")
    pub.add_argument("--server", default=os.environ.get("MLLMDR_SERVER", DEFAULT_SERVER))
    pub.add_argument("--api-key", default=os.environ.get("MLLMDR_API_KEY"))
    pub.add_argument("--checkpoint-every", type=float, default=None, metavar="S", help="request checkpoints")
    pub.add_argument("--out", help="write the final assessment JSON here (default: stdout)")
    pub.add_argument("--no-end", action="store_true", help="leave the session open when the file ends")

    watch = sub.add_parser("watch", help="print a session's live events")
    watch.add_argument("session", help="session id")
    watch.add_argument("--server", default=os.environ.get("MLLMDR_SERVER", DEFAULT_SERVER))
    watch.add_argument("--token", help="clinician or publisher token of the session")
    watch.add_argument(
        "--api-key",
        default=os.environ.get("MLLMDR_API_KEY"),
        help="mint a clinician token with the platform API key instead",
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--types", help="comma-separated event types to show")

    rep = sub.add_parser("replay", help="score recordings offline through the live pipeline")
    rep.add_argument("path", help="recording, session folder, or a folder of them (batch)")
    rep.add_argument("--bundle", default=os.environ.get("MLLMDR_BUNDLE"), help="model bundle directory")
    rep.add_argument(
        "--transcript", help="transcript file (JSON/DAIC-WOZ/E-DAIC/WebVTT/SRT) for one recording"
    )
    rep.add_argument("--out", default="replay-out", help="output folder (default ./replay-out)")
    rep.add_argument(
        "--asr",
        default=None,
        help="speech-to-text source when there is no transcript "
        "(default pocketsphinx; or a Whisper model path)",
    )
    rep.add_argument("--no-asr", action="store_true", help="never run speech-to-text")
    rep.add_argument(
        "--interviewer-channel",
        choices=("left", "right"),
        help="two-party recording: this stereo channel is the interviewer (the other the patient)",
    )
    rep.add_argument("--interviewer", help="two-party: the interviewer's own audio file (one recording)")
    rep.add_argument(
        "--workers",
        type=int,
        default=0,
        help="parallel worker processes for a batch (default 0: one per core, at most one per recording)",
    )
    rep.add_argument("--profile", action="store_true", help="print each recording's per-stage time table")
    rep.add_argument(
        "--int8", action="store_true", help="int8 (dynamic) audio encoder: faster, features differ slightly"
    )
    rep.add_argument(
        "--plain",
        action="store_true",
        help="the server's 20 ms push loop instead of the offline pipeline (same features, slower)",
    )
    rep.add_argument("--no-resume", action="store_true", help="redo sessions that already have results")
    rep.add_argument("--labels", help="split/labels CSV: restrict the batch to it and evaluate")
    rep.add_argument("--max-s", type=float, default=None, help="replay only the first S seconds")
    rep.add_argument("--no-report", action="store_true", help="skip the markdown/HTML report")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
        if args.command == "publish":
            return asyncio.run(_publish(args))
        return asyncio.run(_watch(args))
    except MllmdrError as exc:
        print(f"mllmdr: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# --- replay -------------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from client_sdk.batch import BatchOptions, run_batch
    from mllmdr_core.openmp import passive_openmp

    passive_openmp()  # before torch loads (the replay imports it lazily); the workers inherit it
    from client_sdk.replay import ReplayOptions
    from mllmdr_core.media import find_sources

    if not args.bundle:
        print("mllmdr replay: give --bundle DIR (or set MLLMDR_BUNDLE)", file=sys.stderr)
        return 2
    opts = ReplayOptions(
        transcript=Path(args.transcript) if args.transcript else None,
        asr=args.asr,
        use_asr=not args.no_asr,
        max_s=args.max_s,
        interviewer_channel=args.interviewer_channel,
        interviewer_audio=Path(args.interviewer) if args.interviewer else None,
        fast=not args.plain,
    )
    sources = find_sources(args.path)
    if args.interviewer and len(sources) != 1:
        print("mllmdr replay: --interviewer applies to one recording only", file=sys.stderr)
        return 2
    if args.transcript and len(sources) != 1:
        print("mllmdr replay: --transcript applies to one recording only", file=sys.stderr)
        return 2
    batch = BatchOptions(
        out_dir=Path(args.out),
        workers=args.workers or (os.cpu_count() or 1),
        int8=args.int8,
        resume=not args.no_resume,
        report=not args.no_report,
        labels=Path(args.labels) if args.labels else None,
        replay=opts,
    )
    result = run_batch(args.bundle, sources, batch, progress=not args.quiet)
    if args.profile:
        _print_profiles(Path(args.out), result.rows)
    for row in result.rows:
        screen = "positive" if row["binary"] else "negative"
        print(
            f"{row['session_id']}: PHQ-8 total {row['total']} (screen {screen}); "
            f"{row['media_s']:.1f} s media, RTF {row['rtf']:.2f}"
        )
    for fail in result.failures:
        print(f"{fail['session_id']}: FAILED {fail['error']}", file=sys.stderr)
    if result.skipped:
        print(f"skipped {len(result.skipped)} finished session(s) (resume; --no-resume redoes them)")
    print(f"results: {Path(args.out) / 'summary.csv'}")
    if result.evaluation is not None:
        b, r = result.evaluation["binary"], result.evaluation["regression"]
        print(
            f"evaluation (n={result.evaluation['n']}): P {b['precision']:.3f} R {b['recall']:.3f} "
            f"F1 {b['f1']:.3f} MAE {r['mae']:.3f} RMSE {r['rmse']:.3f} → {Path(args.out) / 'evaluation.md'}"
        )
    return 1 if result.failures else 0


def _print_profiles(out: Path, rows: Sequence[dict[str, object]]) -> None:
    """Each finished recording's per-stage table, read back from its ``replay.json``."""
    from client_sdk.replay_profile import format_table

    for row in rows:
        meta_path = out / str(row["session_id"]) / "replay.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        stages = meta.get("stage_s")
        if stages:
            print(format_table(str(row["session_id"]), float(meta.get("media_s", 0.0)), stages))


# --- publish ------------------------------------------------------------------------------------------


async def _publish(args: argparse.Namespace) -> int:
    from client_sdk.session import Session
    from mllmdr_core.transcripts import read_transcript

    if not args.api_key:
        print("mllmdr publish: give --api-key (or set MLLMDR_API_KEY)", file=sys.stderr)
        return 2
    if not args.camera and not args.file:
        print("mllmdr publish: give FILE or --camera", file=sys.stderr)
        return 2
    lines = read_transcript(args.transcript) if args.transcript else []
    async with await Session.create(args.server, args.api_key) as session:
        created = session.created
        print(f"session {session.session_id}", file=sys.stderr)
        if created is not None:
            print(f"clinician panel: {created.panel_url}", file=sys.stderr)
        if args.camera:
            await session.publish_camera()
        else:
            await session.publish_file(
                args.file,
                video=args.video,
                interviewer_channel=args.interviewer_channel,
                interviewer=args.interviewer,
            )
        started = time.monotonic()
        captions = asyncio.ensure_future(_send_captions(session, lines, started))
        checkpoints = asyncio.ensure_future(_checkpoints(session, args.checkpoint_every))
        try:
            if args.camera:
                with contextlib.suppress(asyncio.CancelledError):  # Ctrl-C: end the session below
                    print("publishing the camera; Ctrl-C ends the session", file=sys.stderr)
                    await asyncio.Event().wait()
            else:
                await session.wait_media_ended()
                await captions
        finally:
            checkpoints.cancel()
            captions.cancel()
        if args.no_end:
            print(f"media ended; session {session.session_id} left open", file=sys.stderr)
            return 0
        final = await session.end()
    if final is None:
        print(
            "mllmdr publish: no final assessment (yet): if the session is pending (LLM backend down) the "
            f"server keeps retrying; `mllmdr watch {session.session_id}` shows it when it arrives",
            file=sys.stderr,
        )
        return 1
    text = final.model_dump_json(indent=1)
    if args.out:
        Path(args.out).write_text(text)
        print(f"final assessment: total {final.total} → {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


async def _send_captions(session: Session, lines: Sequence[TranscriptLine], started: float) -> None:
    """Send each line as a caption when the published media reaches its end time."""
    for line in lines:
        await asyncio.sleep(max(0.0, started + line.end_s - time.monotonic()))
        await session.send_caption(line.text, speaker=line.speaker, start_s=line.start_s, end_s=line.end_s)


async def _checkpoints(session: Session, every: float | None) -> None:
    if not every:
        return
    while True:
        await asyncio.sleep(every)
        await session.checkpoint()


# --- watch --------------------------------------------------------------------------------------------


async def _watch(args: argparse.Namespace) -> int:
    from client_sdk.session import Session, event_to_json

    token = args.token
    if token is None:
        if not args.api_key:
            print("mllmdr watch: give --token or --api-key", file=sys.stderr)
            return 2
        minting = Session(args.server, args.session, token=args.api_key, api_key=args.api_key)
        try:
            token = (await minting.mint_token("clinician")).token
        finally:
            await minting.close()
    types = set(args.types.split(",")) if args.types else None
    async with await Session.attach(args.server, args.session, token) as session:
        async for event in session.events(types=types):
            print(event_to_json(event) if args.json else _describe(event), flush=True)
    return 0


def _describe(event: object) -> str:
    kind = getattr(event, "type", "?")
    seq = getattr(event, "seq", 0)
    if kind == "indicators":
        values = getattr(event, "values", {})
        body = " ".join(f"{k}={v:.3g}" for k, v in sorted(values.items()))
        return f"[{seq}] indicators t={getattr(event, 'media_time_s', 0.0):.1f}s {body}"
    if kind == "transcript":
        line = getattr(event, "line", None)
        return f"[{seq}] transcript {getattr(line, 'speaker', '')}: {getattr(line, 'text', '')}"
    if kind in ("checkpoint.result", "assessment.result"):
        a = getattr(event, "assessment", None)
        items = " ".join(f"{i.key}={i.score}" for i in getattr(a, "items", []))
        return f"[{seq}] {kind} total={getattr(a, 'total', '?')} binary={getattr(a, 'binary', '?')} {items}"
    if kind in ("error", "warning"):
        return f"[{seq}] {kind} {getattr(event, 'code', '')}: {getattr(event, 'message', '')}"
    dump = getattr(event, "model_dump", None)
    fields = dump(exclude={"v", "session_id", "seq", "ts", "type"}) if callable(dump) else {}
    return f"[{seq}] {kind} {json.dumps(fields, default=str)}"


if __name__ == "__main__":
    raise SystemExit(main())
