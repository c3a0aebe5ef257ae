"""Least privilege (issue 21 items 4, 5): the publisher (patient) token never sees scores, rationales or
behavioural measurements, over the WebSocket or REST; an open socket's token is enforced at its expiry
(close 4401) unless refreshed with ``token.refresh``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from server.conftest import RunningServer

from stream_server import protocol as p

# The role matrix of docs/protocol.md, written out: (event type, warning code) → (publisher, clinician)
MATRIX: dict[tuple[str, str], tuple[bool, bool]] = {
    ("session.created", ""): (True, True),
    ("session.status", ""): (True, True),
    ("indicators", ""): (False, True),
    ("transcript", ""): (False, True),
    ("transcript.ack", ""): (True, True),
    ("checkpoint.result", ""): (False, True),
    ("assessment.result", ""): (False, True),
    ("warning", "publisher_lost"): (True, True),
    ("warning", "no_audio_track"): (True, True),
    ("warning", "no_video_track"): (True, True),
    ("warning", "session_resumed"): (True, True),
    ("warning", "asr_behind"): (False, True),
    ("warning", "assessment_retry"): (False, True),
    ("warning", "audio_behind"): (False, True),
    ("error", ""): (True, True),
    ("pong", ""): (True, True),
    ("session.closed", ""): (True, True),
    ("token.refreshed", ""): (True, True),
}
CELLS = [(kind, code, role) for (kind, code) in MATRIX for role in ("publisher", "clinician")]


def test_matrix_covers_every_event_type() -> None:
    assert {kind for kind, _ in MATRIX} == set(p.SERVER_EVENT_TYPES)


@pytest.mark.parametrize(("kind", "code", "role"), CELLS, ids=[f"{k}-{c or '*'}-{r}" for k, c, r in CELLS])
def test_role_matrix_cell(kind: str, code: str, role: str) -> None:
    expected = MATRIX[(kind, code)][0 if role == "publisher" else 1]
    assert p.visible_to(role, kind, code) is expected  # type: ignore[arg-type]


def test_role_matrix_is_documented() -> None:
    text = p.protocol_markdown()
    assert "| `checkpoint.result` | — | yes |" in text
    assert "| `GET /v1/sessions/{id}/export` | clinician, api_key |" in text


def _examples(sid: str) -> list[Any]:
    """One stored event of every type (warnings: one the publisher may see, one it may not)."""
    out = []
    for example in p.protocol_examples():
        if isinstance(example, p._Event) and example.type not in (
            "pong",
            "token.refreshed",
            "session.closed",
        ):
            out.append(example.model_copy(update={"session_id": sid, "seq": 0}))
    out.append(p.WarningEvent(session_id=sid, code="publisher_lost", message="lost"))
    out.append(p.WarningEvent(session_id=sid, code="asr_behind", message="behind"))
    return out


def _seen(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e.get("code", "") if e["type"] == "warning" else "") for e in items}


@pytest.mark.parametrize("role", ["publisher", "clinician"])
async def test_sockets_deliver_by_role_history_and_live(server: RunningServer, role: str) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    bus = server.app.state.server.bus
    events = _examples(sid)
    half = len(events) // 2
    for event in events[:half]:  # stored before the socket opens: history
        await bus.publish(event)
    ev = await server.events(sid, s[f"{role}_token"])
    for event in events[half:]:  # published while it is open: live
        await bus.publish(event)
    await ev.send({"type": "ping", "id": "p1"})
    await ev.wait("pong")
    await asyncio.sleep(0.3)
    seen = _seen(ev.items)
    column = 0 if role == "publisher" else 1
    for example in events:
        code = example.code if example.type == "warning" else ""
        if (example.type, code) not in MATRIX:
            continue
        assert ((example.type, code) in seen) is MATRIX[(example.type, code)][column], (
            role,
            example.type,
            code,
        )
    if role == "publisher":
        assert not {"checkpoint.result", "assessment.result", "indicators"} & {e["type"] for e in ev.items}
    await ev.close()


async def test_rest_results_need_clinician_or_api_key(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    pub, clin = server.bearer(s["publisher_token"]), server.bearer(s["clinician_token"])
    cap = {"text": "I have been sleeping badly", "speaker": "patient", "start_s": 0.0, "end_s": 2.0}
    assert (await server.http.post(f"/v1/sessions/{sid}/captions", json=cap, headers=pub)).status_code == 200
    r = await server.http.post(f"/v1/sessions/{sid}/checkpoint?wait=true", headers=pub)
    assert r.status_code == 200 and r.json()["assessment"] is None  # asked for, result not shown
    r = await server.http.post(f"/v1/sessions/{sid}/checkpoint?wait=true", headers=clin)
    assert r.status_code == 200 and r.json()["assessment"]["kind"] == "checkpoint"
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=pub)
    assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["assessment"] is None
    r = await server.http.get(f"/v1/sessions/{sid}", headers=pub)
    assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["final_assessment"] is None
    for reader in (clin, server.api()):
        r = await server.http.get(f"/v1/sessions/{sid}", headers=reader)
        assert r.json()["final_assessment"]["kind"] == "final"
        assert (await server.http.get(f"/v1/sessions/{sid}/export", headers=reader)).status_code == 200
    r = await server.http.get(f"/v1/sessions/{sid}/export", headers=pub)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=pub)  # again: still withheld
    assert r.json()["assessment"] is None


def _mint(server: RunningServer, sid: str, role: str, ttl_s: float) -> str:
    token, _exp = server.app.state.server.issuer.mint(sid, role, ttl_s)
    return str(token)


async def test_open_socket_closes_4401_at_token_expiry(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    ev = await server.events(sid, _mint(server, sid, "clinician", 2.0))
    await ev.send({"type": "ping", "id": "p1"})
    await ev.wait("pong")
    await asyncio.wait_for(ev.closed.wait(), 6.0)
    assert ev.close_code == 4401
    errors = ev.of("error")
    assert errors and errors[-1]["code"] == "token_expired" and errors[-1]["fatal"] is True


async def test_token_refresh_keeps_a_long_call_open(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    ev = await server.events(sid, _mint(server, sid, "publisher", 2.0))
    # a token of another role may not extend this socket
    await ev.send({"type": "token.refresh", "id": "r0", "token": s["clinician_token"]})
    refused = await ev.wait("error", pred=lambda e: e.get("ref") == "r0")
    assert refused[0]["code"] == "forbidden"
    r = await server.http.post(
        f"/v1/sessions/{sid}/tokens", json={"role": "publisher", "ttl_s": 600}, headers=server.api()
    )
    await ev.send({"type": "token.refresh", "id": "r1", "token": r.json()["token"]})
    done = await ev.wait("token.refreshed")
    assert done[0]["ref"] == "r1" and done[0]["expires_at"] == r.json()["expires_at"]
    await asyncio.sleep(3.5)  # past the first token's expiry
    await ev.send({"type": "ping", "id": "p2"})
    await ev.wait("pong", pred=lambda e: e.get("ref") == "p2")
    assert not ev.closed.is_set()
    await ev.close()
