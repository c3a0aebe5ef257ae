"""Python SDK against the real server (in-process uvicorn on 127.0.0.1, real aiortc peers)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from client_sdk.cli import main
from client_sdk.session import ServerUnavailable, Session
from client_sdk.sync import SyncSession
from client_sdk.synth import SyntheticRecording
from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import AuthError, ProtocolError
from stream_server.protocol import (
    AssessmentResultEvent,
    IndicatorsEvent,
    ServerEvent,
    SessionClosedEvent,
    SessionCreatedEvent,
)

from .server_fixture import API_KEY, free_port, run_server, sdk_settings, threaded_server


async def _collect(session: Session, into: list[ServerEvent]) -> None:
    async for event in session.events():
        into.append(event)


async def test_publish_captions_events_and_final(
    tmp_path: Path, engine: Any, recording: SyntheticRecording
) -> None:
    assert recording.video is not None
    async with (
        run_server(sdk_settings(tmp_path), engine) as url,
        await Session.create(url, API_KEY, external_id="call-1") as session,
    ):
        assert session.created is not None and session.created.session_id == session.session_id
        events: list[ServerEvent] = []
        await session.connect_events()
        reader = asyncio.ensure_future(_collect(session, events))
        await session.publish_file(recording.video)
        for line in recording.lines:
            ack = await session.send_caption(
                line.text,
                speaker=line.speaker,
                start_s=line.start_s,
                end_s=line.end_s,
                ref=f"c{line.start_s}",
            )
            assert ack.ref == f"c{line.start_s}"
        await asyncio.sleep(2.0)
        await session.drop_event_stream()  # the WebSocket reconnects and resumes after the last seq
        await session.wait_media_ended(timeout_s=30)
        await asyncio.sleep(0.5)
        final = await session.end()
        assert isinstance(final, Assessment) and final.kind == "final"
        await asyncio.wait_for(reader, 30)
        export = await session.export()
        assert [ln.text for ln in export.transcript] == [ln.text for ln in recording.lines]
        assert session.reconnects == 1
        info = await session.info()
    # the SDK says what its file audio went through; the stored session and its result carry it
    unprocessed = {"echo_cancellation": False, "noise_suppression": False, "auto_gain_control": False}
    for processing in (info.audio_processing, final.audio_processing):
        assert processing["patient"].source == "python_sdk", processing
        assert processing["patient"].model_dump(include=set(unprocessed)) == unprocessed
    kinds = [e.type for e in events]
    assert isinstance(events[0], SessionCreatedEvent)
    assert any(isinstance(e, IndicatorsEvent) for e in events), kinds
    result = [e for e in events if isinstance(e, AssessmentResultEvent)]
    assert len(result) == 1 and result[0].assessment == final
    assert isinstance(events[-1], SessionClosedEvent) and events[-1].final_assessment
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert final.window_end_s > 4.0  # the server received most of the 6 s file


async def test_publisher_reoffers_after_connection_loss(
    tmp_path: Path, engine: Any, recording: SyntheticRecording
) -> None:
    assert recording.video is not None
    async with (
        run_server(sdk_settings(tmp_path), engine) as url,
        await Session.create(url, API_KEY) as session,
    ):
        await session.publish_file(recording.video)
        await asyncio.sleep(1.5)
        before = (await session.info()).media_time_s
        await session.publisher.drop_connection()  # as a network loss would
        for _ in range(100):
            if session.publisher.reconnects >= 1 and session.publisher.state == "connected":
                break
            await asyncio.sleep(0.1)
        assert session.publisher.reconnects == 1 and session.publisher.state == "connected"
        await session.wait_media_ended(timeout_s=30)
        await asyncio.sleep(0.5)
        info = await session.info()
        assert info.session_id == session.session_id and info.media_time_s > before + 1.0
        final = await session.end()
        assert final is not None and final.session_id == session.session_id


async def test_clear_errors(tmp_path: Path, engine: Any) -> None:
    async with run_server(sdk_settings(tmp_path), engine) as url:
        with pytest.raises(AuthError) as auth:
            await Session.create(url, "wrong-key")
        assert auth.value.code == "auth_failed"
        async with await Session.create(url, API_KEY) as session:
            clinician = (await session.mint_token("clinician")).token
            watcher = await Session.attach(url, session.session_id, clinician)
            with pytest.raises(AuthError) as forbidden:  # clinicians are read-only
                await watcher.send_caption("hi", start_s=0.0, end_s=1.0)
            assert forbidden.value.code == "forbidden"
            await watcher.close()
        ghost = await Session.attach(url, "s_does_not_exist", clinician, reconnect=False)
        with pytest.raises((ProtocolError, AuthError)) as missing:
            await ghost.info()
        assert missing.value.code in ("not_found", "forbidden", "auth_failed")
        await ghost.close()
    with pytest.raises(ServerUnavailable):
        await Session.create(f"http://127.0.0.1:{free_port()}", API_KEY)


def test_sync_wrapper(tmp_path: Path, engine: Any) -> None:
    with threaded_server(sdk_settings(tmp_path), engine) as url, SyncSession.create(url, API_KEY) as s:
        ack = s.send_caption("How are you?", speaker="clinician", start_s=0.0, end_s=1.0)
        assert ack.line_index == 0
        assert s.info().transcript_lines == 1
        final = s.end()
        assert final is not None and final.session_id == s.session_id


def test_cli_publish_then_watch(
    tmp_path: Path, engine: Any, recording: SyntheticRecording, capsys: pytest.CaptureFixture[str]
) -> None:
    assert recording.video is not None
    with threaded_server(sdk_settings(tmp_path), engine) as url:
        common = ["--server", url, "--api-key", API_KEY]
        out = tmp_path / "final.json"
        code = main(
            [
                "publish",
                str(recording.video),
                "--transcript",
                str(recording.transcript),
                "--out",
                str(out),
                *common,
            ]
        )
        assert code == 0
        final = Assessment.model_validate_json(out.read_text())
        session_id = final.session_id
        capsys.readouterr()
        # watching a finished session replays its stored events up to session.closed, then exits
        assert main(["watch", session_id, "--json", *common]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        kinds = [e["type"] for e in lines]
        assert kinds[0] == "session.created" and kinds[-1] == "session.closed"
        assert "assessment.result" in kinds and kinds.count("transcript") >= len(recording.lines)
        result = next(e for e in lines if e["type"] == "assessment.result")
        assert Assessment.model_validate(result["assessment"]) == final
        assert main(["watch", session_id, "--server", url, "--token", "forged.token.x"]) == 2


async def test_close_after_session_closed_releases_the_event_socket(tmp_path: Path, engine: Any) -> None:
    """``events()`` ends at ``session.closed`` while the WebSocket's closing handshake is still running;
    ``close()`` must finish it (not cancel it), or the socket outlives the caller's event loop."""
    async with run_server(sdk_settings(tmp_path), engine) as url:
        async with await Session.create(url, API_KEY) as session:
            clinician = (await session.mint_token("clinician")).token
            assert await session.end() is not None
        for _ in range(3):
            watcher = await Session.attach(url, session.session_id, clinician)
            kinds = [event.type async for event in watcher.events()]
            assert kinds[0] == "session.created" and kinds[-1] == "session.closed"
            sock = watcher._ws.transport.get_extra_info("socket")
            await watcher.close()
            assert sock.fileno() == -1
