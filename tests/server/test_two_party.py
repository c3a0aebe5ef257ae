"""Two-party capture over real aiortc loopback peers: the interviewer's track → speech-to-text lines with
``speaker="clinician"``; track roles in the offer; captions and two tracks at once; train/serve parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer

from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.synth import SCRIPT, TwoPartyRecording, make_two_party
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.transcripts import dump_json

from .conftest import RunningServer
from .peers import publish, publish_two_party


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> TwoPartyRecording:
    return make_two_party(tmp_path_factory.mktemp("call"), SCRIPT[:2])


def within(line: dict[str, Any], turns: list[TranscriptLine], slack_s: float = 0.6) -> bool:
    return any(t.start_s - slack_s <= line["start_s"] and line["end_s"] <= t.end_s + slack_s for t in turns)


async def run_call(
    server: RunningServer, call: TwoPartyRecording, *, label: str | None, captions: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    """Publish ``call`` as two tracks to its end → (transcript lines shown, final assessment, events)."""
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pubs = await publish_two_party(
        server.http, sid, s["publisher_token"], call.patient, call.interviewer, label=label
    )
    if captions:  # the platform captions the clinician once the interviewer's ASR has produced a line
        await clin.wait("transcript", pred=lambda e: e["line"]["speaker"] == "clinician", timeout=120)
        q = next(t for t in call.lines if t.speaker == "clinician")
        r = await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": q.text, "speaker": "clinician", "start_s": q.start_s, "end_s": q.end_s},
        )
        assert r.status_code == 200, r.text
    await clin.wait("indicators", pred=lambda e: e["media_time_s"] > call.duration_s - 0.5, timeout=90)
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.status_code == 200, r.text
    final = r.json()["assessment"]
    for pub in pubs:
        await pub.close()
    return [e["line"] for e in clin.of("transcript")], final, clin


async def test_interviewer_track_gives_clinician_lines_paired_in_prompts(
    asr_server: RunningServer, call: TwoPartyRecording
) -> None:
    lines, final, _ = await run_call(asr_server, call, label="interviewer")
    questions = [t for t in call.lines if t.speaker == "clinician"]
    answers = [t for t in call.lines if t.speaker == "patient"]
    clinician = [ln for ln in lines if ln["speaker"] == "clinician"]
    patient = [ln for ln in lines if ln["speaker"] == "patient"]
    assert clinician and patient
    assert all(ln["source"] == "asr:pocketsphinx" for ln in lines)
    assert all(within(ln, questions) for ln in clinician), clinician  # the questions' times only
    assert all(within(ln, answers) for ln in patient), patient  # no interviewer speech on the patient
    prompt_text = "\n".join(item["prompt"] for item in final["items"])
    assert all(f'Q: {ln["text"]}' in prompt_text for ln in clinician if len(ln["text"].split()) >= 3)


async def test_second_audio_track_by_order_and_silent_interviewer(
    asr_server: RunningServer, tmp_path: Path
) -> None:
    """No ``tracks`` labels: the second audio track is the interviewer's (m-line order). Bad input: that
    track is silent → no clinician lines, the patient's lines as usual, no warning about it."""
    silent = make_two_party(tmp_path, SCRIPT[:1], silent_interviewer=True)
    lines, final, clin = await run_call(asr_server, silent, label=None)
    answers = [t for t in silent.lines if t.speaker == "patient"]
    assert lines and all(ln["speaker"] == "patient" and within(ln, answers) for ln in lines)
    assert final["kind"] == "final"
    assert not [w for w in clin.of("warning") if "interviewer" in w["code"]]


async def test_clinician_captions_take_over_from_the_interviewer_track(
    asr_server: RunningServer, call: TwoPartyRecording
) -> None:
    """Captions and two tracks at once: a clinician caption stops the interviewer track's ASR (warning
    ``interviewer_asr_stopped``); its ASR lines leave the prompts, the patient's ASR goes on."""
    lines, final, clin = await run_call(asr_server, call, label="interviewer", captions=True)
    assert [w["code"] for w in clin.of("warning") if w["code"].startswith("interviewer")] == [
        "interviewer_asr_stopped"
    ]
    prompt_text = "\n".join(item["prompt"] for item in final["items"])
    asr_questions = [ln for ln in lines if ln["speaker"] == "clinician" and ln["source"] != "captions"]
    assert asr_questions and not any(ln["text"] in prompt_text for ln in asr_questions)
    assert next(t.text for t in call.lines if t.speaker == "clinician") in prompt_text
    patient = [ln for ln in lines if ln["speaker"] == "patient"]
    assert patient and any(ln["text"] in prompt_text for ln in patient)


async def test_track_roles_that_do_not_fit_are_refused(
    server: RunningServer, call: TwoPartyRecording
) -> None:
    """Three audio tracks, or two labelled patient → ``bad_sdp`` (400), nothing published."""
    s = await server.create_session()
    for n, labels in ((3, None), (2, "patient")):
        players = [MediaPlayer(str(call.patient)) for _ in range(n)]
        pc = RTCPeerConnection()
        senders = [pc.addTrack(p.audio) for p in players]
        await pc.setLocalDescription(await pc.createOffer())
        body: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if labels:
            body["tracks"] = {sn.track.id: labels for sn in senders}
        r = await server.http.post(
            f"/v1/sessions/{s['session_id']}/offer", headers=server.bearer(s["publisher_token"]), json=body
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_sdp", r.text
        await pc.close()
        for p in players:
            p.audio.stop()


async def test_same_prompts_live_replay_and_training(
    server: RunningServer, call: TwoPartyRecording, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Train/serve parity: one synthetic session (captions given: no ASR noise) through the real server,
    through replay and through the training example builder → the same 8 prompts."""
    from training.dataset import FeatureCache, SessionLabels, build_examples
    from training.features import SessionFeatures, save_features

    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pub = await publish(server.http, sid, s["publisher_token"], call.patient)
    await clin.wait("indicators", pred=lambda e: e["media_time_s"] > call.duration_s - 0.5, timeout=90)
    for line in call.lines:
        r = await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": line.text, "speaker": line.speaker, "start_s": line.start_s, "end_s": line.end_s},
        )
        assert r.status_code == 200, r.text
    final = (await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())).json()["assessment"]
    await pub.close()
    live = {item["key"]: item["prompt"] for item in final["items"]}

    transcript = tmp_path / "call.json"
    transcript.write_text(dump_json(list(call.lines)))
    replayer = Replayer(tiny_bundle)
    replay = replayer.replay(call.patient, ReplayOptions(transcript=transcript), keep_features=True)
    replayed = replay.assessment.prompts()

    assert replay.audio_features is not None and replay.visual_features is not None
    save_features(
        tmp_path / "feats" / "call.npz",
        SessionFeatures(replay.audio_features, replay.visual_features, {}, "hubert", "none", replay.media_s),
    )
    labels = SessionLabels("call", "train", call.lines, dict.fromkeys(live, 0))
    examples = build_examples([labels], tmp_path / "feats", replayer.bundle.config, cache=FeatureCache())
    trained = {ex.item_key: ex.prompt for ex in examples}

    assert len(live) == 8 and any(call.lines[0].text in p for p in live.values())
    assert live == replayed == trained
