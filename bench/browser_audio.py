"""Browser audio vs the Python SDK for the same file: speech-to-text word error rate and prosody indicators.

Run: ``.venv/bin/python bench/browser_audio.py [--runs 1] [--answers 6]``. Writes
``bench/results/browser_audio.json``.

One synthetic patient track (espeak-ng answers of ``client_sdk.synth.SCRIPT``, silence where the
interviewer speaks, 1.5 s lead-in) goes to one server (``python -m stream_server``, tiny bundle, default
speech-to-text ``auto`` = pocketsphinx on the patient's speech) three ways, a new session each:

- ``python_sdk``: ``Session.publish_file`` (aiortc reads the wav; Opus over loopback WebRTC);
- ``browser_speech``: headless Chromium's fake microphone playing the wav (``--use-file-for-fake-audio-
  capture``), captured with the browser SDK's ``captureMedia()`` defaults (``SPEECH_AUDIO_CONSTRAINTS``:
  no echo cancellation, noise suppression or automatic gain control);
- ``browser_processed``: the same with echo cancellation, noise suppression and automatic gain control on
  (what ``getUserMedia({audio: true})`` gives in Chromium).

Per session: WER of the patient's recognised lines against the answers' text, and the session mean of
the stored ``indicators`` points (each over the server's indicator window) for ``f0_mean_hz``,
``f0_sd_semitones``, ``energy_sd_db`` and ``speech_ratio``; ``audio_processing`` as stored.
``browser_minus_sdk``: each browser mode's figures minus the Python SDK's. ``replay``: the same file
through the core alone (``client_sdk.replay``, no network, one run: it is deterministic), the reference
both live paths are compared with. Each session gets a fresh
server (pocketsphinx adapts to its speaker across the utterances it decodes, so a recogniser shared by
the sessions would favour whichever mode comes later); the mode order rotates from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import API_KEY, api_headers, build_bundle, load_avg, server_process, write_result

from client_sdk.synth import SCRIPT, make_two_party
from mllmdr_core.features.transcribe import word_errors

INDICATORS = ("f0_mean_hz", "f0_sd_semitones", "energy_sd_db", "speech_ratio")
CHROMIUM = "/usr/bin/chromium"
MODES = ("python_sdk", "browser_speech", "browser_processed")
PROCESSED = {"echoCancellation": True, "noiseSuppression": True, "autoGainControl": True}

PUBLISH = """async ({ token, audio, durationS }) => {
  const sdk = await import("/sdk/mllmdr.js");
  const session = await sdk.connect({ token });
  const stream = await sdk.captureMedia({ audio });
  await session.publish(stream);
  const [track] = stream.getAudioTracks();
  setTimeout(() => { track.enabled = false; }, durationS * 1000 + 300);  // the fake mic loops its file
  return sdk.audioProcessing(track);
}"""


def chromium_args(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
    ]


async def session_figures(http: Any, sid: str, reference: str) -> dict[str, Any]:
    export = (await http.get(f"/v1/sessions/{sid}/export", headers=api_headers())).json()
    said = " ".join(ln["text"] for ln in export["transcript"] if ln["speaker"] == "patient")
    errors, words = word_errors(reference, said)
    points = [p["values"] for p in export["indicators"]]
    means = {
        k: round(statistics.fmean(v), 3) if (v := [p[k] for p in points if p.get(k) is not None]) else None
        for k in INDICATORS
    }
    return {
        "wer": round(errors / words, 3),
        "recognised": said,
        "indicators": means,
        "indicator_points": len(points),
        "audio_processing": export["info"]["audio_processing"],
    }


async def run_python_sdk(base: str, http: Any, wav: Path, reference: str) -> dict[str, Any]:
    from client_sdk.session import Session

    session = await Session.create(base, API_KEY, http=http)
    try:
        await session.publish_file(wav)
        await session.wait_media_ended(300)
        await session.end()
    finally:
        await session.close()
    return await session_figures(http, session.session_id, reference)


async def run_browser(
    base: str, http: Any, browser: Any, audio: Any, wav_s: float, reference: str
) -> dict[str, Any]:
    created = (await http.post("/v1/sessions", headers=api_headers(), json={})).json()
    page = await (await browser.new_context()).new_page()
    try:
        await page.goto(f"{base}/healthz")
        args = {"token": created["publisher_token"], "audio": audio, "durationS": wav_s}
        await page.evaluate(PUBLISH, args)
        await asyncio.sleep(wav_s + 1.5)
        r = await http.post(f"/v1/sessions/{created['session_id']}/end", headers=api_headers(), timeout=300)
        r.raise_for_status()
    finally:
        await page.close()
    return await session_figures(http, created["session_id"], reference)


def replay_figures(bundle: Path, wav: Path, reference: str) -> dict[str, Any]:
    """The file through the core alone (no network): WER and the mean of its indicator series."""
    from client_sdk.replay import Replayer

    result = Replayer(bundle).replay(wav)
    said = " ".join(ln.text for ln in result.transcript if ln.speaker == "patient")
    errors, words = word_errors(reference, said)
    means = {
        k: round(statistics.fmean(v), 3)
        if (v := [p.values[k] for p in result.indicators if k in p.values])
        else None
        for k in INDICATORS
    }
    return {"wer": round(errors / words, 3), "recognised": said, "indicators": means}


async def one_session(mode: str, bundle: Path, work: Path, browser: Any, call: Any) -> dict[str, Any]:
    """One session of ``mode`` on a fresh server (its own recogniser)."""
    import httpx

    reference = " ".join(t.text for t in call.lines if t.speaker == "patient")
    async with (
        server_process(bundle, work) as srv,
        httpx.AsyncClient(base_url=srv.base, timeout=60) as http,
    ):
        if mode == "python_sdk":
            return await run_python_sdk(srv.base, http, call.patient, reference)
        audio = True if mode == "browser_speech" else PROCESSED
        return await run_browser(srv.base, http, browser, audio, call.duration_s, reference)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="sessions per mode")
    ap.add_argument("--answers", type=int, default=6, help="question/answer turns (≤ 6)")
    args = ap.parse_args()
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="browser-audio-"))
    call = make_two_party(work / "call", SCRIPT[: args.answers], gap_s=1.5)
    wav, wav_s = call.patient, call.duration_s
    reference = " ".join(t.text for t in call.lines if t.speaker == "patient")
    load_start = [round(x, 2) for x in load_avg()]
    sessions: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    bundle = build_bundle("tiny")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav))
        try:
            for run in range(args.runs):
                for mode in MODES[run % len(MODES) :] + MODES[: run % len(MODES)]:
                    out = await one_session(mode, bundle, work / f"server-{run}-{mode}", browser, call)
                    sessions[mode].append(out)
                    print(f"run {run} {mode}: WER {out['wer']} {out['indicators']}", file=sys.stderr)
        finally:
            await browser.close()
    summary = {
        mode: {
            "wer_mean": round(statistics.fmean(s["wer"] for s in runs), 3),
            "wer_runs": [s["wer"] for s in runs],
            **{
                k: round(statistics.fmean(v), 3)
                if (v := [s["indicators"][k] for s in runs if s["indicators"][k] is not None])
                else None
                for k in INDICATORS
            },
        }
        for mode, runs in sessions.items()
    }
    sdk = summary["python_sdk"]
    diff = {
        mode: {
            k: round(v - sdk[k], 3)
            for k, v in fig.items()
            if isinstance(v, float) and isinstance(sdk.get(k), float)
        }
        for mode, fig in summary.items()
        if mode != "python_sdk"
    }
    replay = await asyncio.to_thread(replay_figures, bundle, wav, reference)
    print(f"replay: WER {replay['wer']} {replay['indicators']}", file=sys.stderr)
    payload = {
        "audio_s": round(wav_s, 1),
        "replay": replay,
        "reference_words": len(reference.split()),
        "runs_per_mode": args.runs,
        "summary": summary,
        "browser_minus_sdk": diff,
        "sessions": sessions,
        "load_avg_start": load_start,
    }
    path = write_result("browser_audio", payload)
    print(f"wrote {path}")
    for mode, fig in summary.items():
        print(mode, fig)


if __name__ == "__main__":
    asyncio.run(main())
