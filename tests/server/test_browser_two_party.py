"""Two-party capture from real headless Chromium through the browser SDK: the patient's microphone is
Chromium's fake capture of a synthetic patient wav, the interviewer's stream a WebAudio
``MediaStreamAudioDestinationNode`` playing the synthetic interviewer wav; ``publish(patient,
{interviewer})``. The stored assessment pairs the interviewer's recognised questions with the patient's
answers, and says what capture processing each track went through (``audio_processing``)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client_sdk.synth import SCRIPT, TwoPartyRecording, make_two_party

from .conftest import RunningServer
from .test_browser import CHROMIUM, chromium_args, pytestmark  # noqa: F401  (marks)

LEAD_IN_S = 1.5  # silence before the first question and between turns: covers the connection set-up

CALL = """async ({ token, interviewerWav }) => {
  const sdk = await import("/sdk/mllmdr.js");
  const session = await sdk.connect({ token });
  const bytes = Uint8Array.from(atob(interviewerWav), (c) => c.charCodeAt(0));
  const ctx = new AudioContext({ sampleRate: 48000 });
  const buffer = await ctx.decodeAudioData(bytes.buffer);
  const dest = ctx.createMediaStreamDestination();
  dest.channelCount = 1;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(dest);
  const patient = await sdk.captureMedia();  // the fake microphone starts its file now …
  source.start();  // … and the interviewer's file with it: one timeline for both tracks
  await session.publish(patient, { interviewer: dest.stream });
  const tracks = [patient.getAudioTracks()[0], dest.stream.getAudioTracks()[0]];
  // the fake microphone loops its file: silence both once the interview has been played
  setTimeout(() => { for (const t of tracks) t.enabled = false; }, buffer.duration * 1000 + 300);
  globalThis.__session = session;
  return { patient: sdk.audioProcessing(tracks[0]), interviewer: sdk.audioProcessing(tracks[1]) };
}"""

SETTINGS = """async () => {
  const sdk = await import("/sdk/mllmdr.js");
  const out = {};
  for (const [name, audio] of [["speech", true], ["call", { echoCancellation: true,
      noiseSuppression: true, autoGainControl: true }]]) {
    const stream = await sdk.captureMedia({ audio });
    out[name] = sdk.audioProcessing(stream.getAudioTracks()[0]);
    for (const t of stream.getTracks()) t.stop();
  }
  return out;
}"""


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> TwoPartyRecording:
    return make_two_party(tmp_path_factory.mktemp("call"), SCRIPT[:2], gap_s=LEAD_IN_S)


@pytest.fixture
async def browser(call: TwoPartyRecording) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(call.patient))
        try:
            yield b
        finally:
            await b.close()


async def test_browser_publishes_both_parties_and_prompts_pair_questions_with_answers(
    asr_server: RunningServer, browser: Any, call: TwoPartyRecording
) -> None:
    server = asr_server
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    page = await (await browser.new_context(bypass_csp=True)).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{server.base}/healthz")  # the server's origin, for the module import
    wav = base64.b64encode(call.interviewer.read_bytes()).decode()
    sent = await page.evaluate(CALL, {"token": s["publisher_token"], "interviewerWav": wav})
    await clin.wait("indicators", pred=lambda e: e["media_time_s"] > call.duration_s - 0.5, timeout=60)
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.status_code == 200, r.text
    await page.close()
    info = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()
    export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
    final, lines = info["final_assessment"], export["transcript"]
    clinician = [ln for ln in lines if ln["speaker"] == "clinician"]
    patient = [ln for ln in lines if ln["speaker"] == "patient"]
    print("recognised:", [(ln["speaker"], round(ln["start_s"], 1), ln["text"]) for ln in lines])
    assert clinician and patient, lines
    assert all(ln["source"] == "asr:pocketsphinx" for ln in lines)
    # one timeline: each recognised line lies within its own party's speech (set-up shifts both alike)
    shift = min(ln["start_s"] for ln in lines) - next(t.start_s for t in call.lines)
    questions = [t for t in call.lines if t.speaker == "clinician"]
    answers = [t for t in call.lines if t.speaker == "patient"]

    def party_of(line: dict[str, Any]) -> str:
        t0, t1 = line["start_s"] - shift, line["end_s"] - shift
        inside = [t for t in call.lines if t.start_s - 0.8 <= t0 and t1 <= t.end_s + 0.8]
        return inside[0].speaker if inside else "none"

    assert all(party_of(ln) == "clinician" for ln in clinician), (shift, clinician)
    assert all(party_of(ln) == "patient" for ln in patient), (shift, patient)
    # the stored prompts pair the recognised questions with the answers that follow them
    pairs = [p for item in final["items"] for p in item["pairs"]]
    asked = [p for p in pairs if p["question"]]
    assert asked, pairs
    for p in asked:
        q = next(ln for ln in clinician if ln["text"] == p["question"])
        answer = next(a for a in answers if a.start_s + shift >= q["end_s"] - 0.8)  # the next answer
        assert p["start_s"] == pytest.approx(q["start_s"], abs=0.05), (p, q)  # a pair spans Q and A
        assert answer.start_s + shift < p["end_s"] <= answer.end_s + shift + 0.8, (p, answer)
    prompt_text = "\n".join(item["prompt"] for item in final["items"])
    assert all(f"Q: {ln['text']}" in prompt_text for ln in clinician if len(ln["text"].split()) >= 3)
    assert len({ln["text"] for ln in clinician}) <= len(questions) * 2
    # what capture did to each track: the SDK's speech-preserving defaults, stored and in the result
    assert sent["patient"]["echo_cancellation"] is False and sent["patient"]["auto_gain_control"] is False
    for stored in (info["audio_processing"], final["audio_processing"]):
        assert stored["patient"] == {**{k: None for k in stored["patient"]}, **sent["patient"]}
        assert stored["interviewer"]["source"] == "browser"
    assert errors == []


async def test_capture_helper_asks_for_unprocessed_speech_and_reports_what_it_got(
    server: RunningServer, browser: Any
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.base}/healthz")
    got = await page.evaluate(SETTINGS)
    await page.close()
    speech, call = got["speech"], got["call"]
    print("getSettings:", got)
    # reported as applied: Chromium's fake microphone stays stereo although mono is asked for (ideal)
    assert speech["source"] == "browser" and speech["channel_count"] in (1, 2)
    for key in ("echo_cancellation", "noise_suppression", "auto_gain_control"):
        assert speech[key] is False and call[key] is True, got
