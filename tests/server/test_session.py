"""Live media over real aiortc loopback peers: indicators, final assessment, storage, metrics, faults."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from .conftest import RunningServer
from .peers import publish


async def test_publish_indicators_and_final_assessment(server: RunningServer, recording: Path) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pub = await publish(server.http, sid, s["publisher_token"], recording)
    status = await clin.wait("session.status", pred=lambda e: e["state"] == "live")
    assert status[0]["audio"] and status[0]["video"]
    indicators = await clin.wait("indicators", 3, timeout=30)
    assert indicators[-1]["media_time_s"] > indicators[0]["media_time_s"] > 0
    assert all(isinstance(v, float) for v in indicators[-1]["values"].values())
    await server.http.post(
        f"/v1/sessions/{sid}/captions",
        headers=server.bearer(s["publisher_token"]),
        json={"text": "I wake up at four", "speaker": "patient", "start_s": 1, "end_s": 2},
    )
    r = await server.http.post(
        f"/v1/sessions/{sid}/checkpoint?wait=true", headers=server.bearer(s["clinician_token"])
    )
    assert r.status_code == 200 and r.json()["assessment"]["kind"] == "checkpoint"
    await clin.wait("checkpoint.result")
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())  # results: API key
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "closed" and body["assessment"]["kind"] == "final"
    final = (await clin.wait("assessment.result"))[0]["assessment"]
    assert final == body["assessment"]
    closed = (await clin.wait("session.closed"))[0]
    assert closed["reason"] == "ended" and closed["final_assessment"] is True
    await asyncio.wait_for(clin.closed.wait(), 5)
    assert clin.close_code == 1000
    await pub.close()
    export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
    assert export["assessment"]["kind"] == "final" and len(export["checkpoints"]) == 1
    assert len(export["indicators"]) >= 3 and export["info"]["state"] == "closed"
    assert [e["seq"] for e in export["events"]] == sorted(e["seq"] for e in export["events"])
    metrics = (await server.http.get("/metrics")).text
    for needle in (
        'mllmdr_frames_total{kind="audio"}',
        'mllmdr_frames_total{kind="video"}',
        'mllmdr_stage_seconds_count{stage="audio"}',
        'mllmdr_stage_seconds_count{stage="video"}',
        'mllmdr_stage_seconds_count{stage="assess_final"} 1',
        "mllmdr_processing_lag_seconds_bucket",
        'mllmdr_assessments_total{kind="final"} 1',
        'mllmdr_assessment_grounding_count{kind="final"} 1',
        "mllmdr_sessions_started_total 1",
    ):
        assert needle in metrics, needle
    share = final["grounding_share"]
    assert 0.0 <= share <= 1.0 and f'mllmdr_assessment_grounding_sum{{kind="final"}} {share:g}' in metrics
    assert all(item["grounding"] is not None and item["prompt"] for item in final["items"])
    # the received audio was recorded (record_audio): the whole call, 48 kHz stereo as sent by aiortc
    with wave.open(str(Path(server.settings.var_dir) / "recordings" / f"{sid}.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (48000, 2)
        assert wav.getnframes() / 48000 >= indicators[-1]["media_time_s"] - 1.0
    # ending twice is idempotent and returns the stored assessment
    again = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert again.json()["assessment"] == final


async def test_publisher_that_vanishes_ends_cleanly_with_data_kept(
    server: RunningServer, recording: Path
) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pub = await publish(server.http, sid, s["publisher_token"], recording)
    await clin.wait("indicators", 1, timeout=30)
    await pub.close()  # gone, no session.end
    lost = await clin.wait("session.status", pred=lambda e: e["state"] == "reconnecting", timeout=40)
    assert lost
    closed = (await clin.wait("session.closed", timeout=60))[0]
    assert closed["reason"] == "publisher_gone" and closed["final_assessment"] is True
    export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
    assert export["assessment"] is not None and len(export["indicators"]) >= 1


async def test_reconnect_within_grace_continues_the_session(server: RunningServer, recording: Path) -> None:
    s = await server.create_session(checkpoint_interval_s=2.0)
    sid = s["session_id"]
    clin = await server.events(sid, s["clinician_token"])
    pub = await publish(server.http, sid, s["publisher_token"], recording)
    await clin.wait("indicators", 1, timeout=30)
    await pub.close()
    await clin.wait("session.status", pred=lambda e: e["state"] == "reconnecting", timeout=40)
    pub2 = await publish(server.http, sid, s["publisher_token"], recording)
    await clin.wait("session.status", 2, pred=lambda e: e["state"] == "live", timeout=20)
    before = len(clin.of("indicators"))
    await clin.wait("indicators", before + 2, timeout=30)
    assert not clin.of("session.closed")
    # checkpoints: on the schedule, and on a clinician's request over the WebSocket
    await clin.wait("checkpoint.result", pred=lambda e: e["trigger"] == "schedule", timeout=60)
    await clin.send({"type": "checkpoint.request", "id": "k1"})
    asked = (await clin.wait("checkpoint.result", pred=lambda e: e["ref"] == "k1", timeout=60))[0]
    assert asked["trigger"] == "request" and asked["assessment"]["kind"] == "checkpoint"
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.json()["state"] == "closed"
    await pub2.close()


async def test_media_with_only_audio_or_only_video(server: RunningServer, recording: Path) -> None:
    for audio, video, code in ((True, False, "no_video_track"), (False, True, "no_audio_track")):
        s = await server.create_session()
        sid = s["session_id"]
        clin = await server.events(sid, s["clinician_token"])
        pub = await publish(server.http, sid, s["publisher_token"], recording, audio=audio, video=video)
        warning = (await clin.wait("warning", pred=lambda e, c=code: e["code"] == c))[0]
        assert warning["message"]
        ev = (await clin.wait("indicators", pred=lambda e: e["media_time_s"] > 2.0, timeout=30))[-1]
        # the missing modality's indicators are absent with a reason ("not available"), never 0.0
        missing, present = ("head_motion", "speech_ratio") if not video else ("speech_ratio", "head_motion")
        reason = "no video received" if not video else "no audio received"
        assert missing not in ev["values"] and ev["unavailable"][missing] == reason
        assert present in ev["values"] and present not in ev["unavailable"]
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert r.json()["assessment"]["kind"] == "final"
        await pub.close()


async def test_auto_transcript_source_asr_without_captions_captions_take_over(
    tmp_path: Path, tiny_bundle: Path, recording: Path
) -> None:
    """Source ``auto`` (the server default): a session with no captions gets a pocketsphinx transcript in
    its item prompts; in a session the platform captions, ASR stops and its lines leave the prompts."""
    from mllmdr_core.assess import LOW_ACCURACY_LABEL
    from stream_server.engine import CoreEngine

    from .conftest import make_settings, run_server

    assert make_settings(tmp_path).transcript_source == "auto"
    engine = CoreEngine(tiny_bundle, transcript_source="auto")
    async with run_server(make_settings(tmp_path), engine) as server:

        async def no_captions() -> None:
            s = await server.create_session()
            sid = s["session_id"]
            clin = await server.events(sid, s["clinician_token"])
            assert (await clin.wait("session.created"))[0]["transcript_source"] == "auto:pocketsphinx"
            pub = await publish(server.http, sid, s["publisher_token"], recording)
            line = (await clin.wait("transcript", timeout=120))[0]["line"]
            assert line["source"] == "asr:pocketsphinx" and line["speaker"] == "patient" and line["text"]
            await clin.wait("indicators", pred=lambda e: e["media_time_s"] > 5.0, timeout=60)
            final = (await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())).json()
            final = final["assessment"]
            assert final["model"]["transcript_source"] == "asr:pocketsphinx"
            assert final["model"]["low_accuracy_transcript"] is True and LOW_ACCURACY_LABEL in final["labels"]
            spans = [e for it in final["items"] for e in it["evidence"] if e["kind"] == "transcript"]
            assert spans and all(e["text"] for e in spans)
            export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
            stored = [t for t in export["transcript"] if t["source"] == "asr:pocketsphinx"]
            assert stored and [t["text"] for t in stored] == [
                e["line"]["text"] for e in clin.of("transcript")
            ]  # every stored line was shown live
            await pub.close()

        async def captioned() -> None:
            s = await server.create_session()
            sid = s["session_id"]
            clin = await server.events(sid, s["clinician_token"])
            pub = await publish(server.http, sid, s["publisher_token"], recording)
            await clin.wait("transcript", timeout=120)  # ASR ran before the first caption
            r = await server.http.post(
                f"/v1/sessions/{sid}/captions",
                headers=server.bearer(s["publisher_token"]),
                json={"text": "I sleep badly", "speaker": "patient", "start_s": 0.5, "end_s": 1.5},
            )
            assert r.status_code == 200
            await clin.wait("warning", pred=lambda e: e["code"] == "asr_stopped")
            assert not engine._gates[sid].active
            final = (await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())).json()
            model = final["assessment"]["model"]
            assert model["transcript_source"] == "captions" and model["low_accuracy_transcript"] is False
            await pub.close()

        await asyncio.gather(no_captions(), captioned())


async def test_publisher_that_goes_silent_is_detected(
    tmp_path: Path, engine: object, recording: Path
) -> None:
    """No DTLS close, no ICE failure yet: frames just stop (a crashed or frozen publisher)."""
    from .conftest import make_settings, run_server

    settings = make_settings(tmp_path, media_timeout_s=1.5, reconnect_grace_s=1.0)
    async with run_server(settings, engine) as server:  # type: ignore[arg-type]
        s = await server.create_session()
        sid = s["session_id"]
        clin = await server.events(sid, s["clinician_token"])
        pub = await publish(server.http, sid, s["publisher_token"], recording)
        await clin.wait("indicators", 1)
        assert pub.player is not None
        for track in (pub.player.audio, pub.player.video):
            track.stop()  # the peer connection stays open
        lost = (await clin.wait("session.status", pred=lambda e: e["state"] == "reconnecting"))[0]
        assert "no media" in lost["detail"]
        closed = (await clin.wait("session.closed"))[0]
        assert closed["reason"] == "publisher_gone" and closed["final_assessment"] is True
        await pub.pc.close()


async def test_end_flushes_the_last_speech_segment_into_the_final_assessment(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    """Audio that stops mid-speech (a hang-up while the patient talks): only ``SessionState.flush`` at
    the end closes that speech segment, so its ASR text must reach the final assessment."""
    import time

    import numpy as np

    from client_sdk.synth import AUDIO_RATE, speak
    from stream_server.engine import CoreEngine
    from stream_server.ingest import QueuedAudio

    from .conftest import make_settings, run_server

    speech = speak("I have not been sleeping well and I feel tired every day")
    loud = np.flatnonzero(np.abs(speech) > 500)
    speech = np.concatenate([np.zeros(AUDIO_RATE // 2, np.int16), speech[: loud[-1] + 1]])  # ends in speech
    engine = CoreEngine(tiny_bundle, transcript_source="pocketsphinx")
    async with run_server(make_settings(tmp_path, record_audio=False), engine) as server:
        s = await server.create_session()
        sid = s["session_id"]
        clin = await server.events(sid, s["clinician_token"])
        live = server.app.state.server.manager.sessions[sid]
        step = AUDIO_RATE // 50  # 20 ms frames, as a WebRTC track delivers them
        for i in range(0, len(speech), step):
            live.ingest.queues.put_audio(QueuedAudio(speech[i : i + step], AUDIO_RATE, 1, time.monotonic()))
        live.ingest.queues.wake.set()
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        final = r.json()["assessment"]
        assert final["model"]["transcript_source"] == "asr:pocketsphinx"
        assert final["window_end_s"] >= len(speech) / AUDIO_RATE - 0.05
        lines = [e["line"] for e in await clin.wait("transcript")]
        assert lines[-1]["end_s"] > len(speech) / AUDIO_RATE - 1.0  # the segment cut by the hang-up
        export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
        assert [t["text"] for t in export["transcript"]] == [line["text"] for line in lines]
