"""REST + WebSocket surface against a real uvicorn server: auth, sessions, captions, bad input."""

from __future__ import annotations

import asyncio
import time

import jwt

from .conftest import API_KEY, RunningServer


async def test_health_ready_metrics(server: RunningServer) -> None:
    assert (await server.http.get("/healthz")).json() == {"status": "ok"}
    ready = await server.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    text = (await server.http.get("/metrics")).text
    assert "# TYPE mllmdr_stage_seconds histogram" in text
    assert "mllmdr_sessions_live 0" in text


async def test_create_session_requires_api_key(server: RunningServer) -> None:
    r = await server.http.post("/v1/sessions", json={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth_failed"
    r = await server.http.post("/v1/sessions", json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    s = await server.create_session(external_id="call-1")
    assert s["session_id"].startswith("s_")
    assert s["patient_url"].endswith(f"#token={s['publisher_token']}")
    assert s["expires_at"] > time.time() + 60
    claims = jwt.decode(s["clinician_token"], options={"verify_signature": False})
    assert claims["sub"] == s["session_id"] and claims["role"] == "clinician"


async def test_tokens_are_scoped_to_role_and_session(server: RunningServer) -> None:
    a = await server.create_session()
    b = await server.create_session()
    cap = {"text": "hello", "speaker": "patient", "start_s": 0.0, "end_s": 1.0}
    # a token for A never reads or writes B
    r = await server.http.get(f"/v1/sessions/{b['session_id']}", headers=server.bearer(a["clinician_token"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await server.http.post(
        f"/v1/sessions/{b['session_id']}/captions", json=cap, headers=server.bearer(a["publisher_token"])
    )
    assert r.status_code == 403
    ev = await server.events(b["session_id"], a["clinician_token"])
    await asyncio.wait_for(ev.closed.wait(), 5)
    assert ev.close_code == 4403 and ev.items[0]["code"] == "forbidden" and ev.items[0]["fatal"] is True
    # clinician cannot publish captions or media
    r = await server.http.post(
        f"/v1/sessions/{a['session_id']}/captions", json=cap, headers=server.bearer(a["clinician_token"])
    )
    assert r.status_code == 403
    r = await server.http.post(
        f"/v1/sessions/{a['session_id']}/offer",
        json={"sdp": "v=0", "type": "offer"},
        headers=server.bearer(a["clinician_token"]),
    )
    assert r.status_code == 403
    # the API key mints tokens; an expired token says so; a forged one is refused
    r = await server.http.post(
        f"/v1/sessions/{a['session_id']}/tokens",
        json={"role": "clinician", "ttl_s": 10},
        headers=server.api(),
    )
    assert r.status_code == 200 and r.json()["expires_at"] <= time.time() + 11
    expired = jwt.encode(
        {
            "sub": a["session_id"],
            "role": "clinician",
            "exp": int(time.time()) - 5,
            "iss": "mllmdr-server",
            "jti": "x",
        },
        server.settings.jwt_secret or "",
        algorithm="HS256",
    )
    r = await server.http.get(f"/v1/sessions/{a['session_id']}", headers=server.bearer(expired))
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    forged = jwt.encode(
        {
            "sub": a["session_id"],
            "role": "clinician",
            "exp": int(time.time()) + 60,
            "iss": "mllmdr-server",
            "jti": "x",
        },
        "not-the-secret-" * 3,
        algorithm="HS256",
    )
    r = await server.http.get(f"/v1/sessions/{a['session_id']}", headers=server.bearer(forged))
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth_failed"
    ev = await server.events(a["session_id"], expired)
    await asyncio.wait_for(ev.closed.wait(), 5)
    assert ev.close_code == 4401 and ev.items[0]["code"] == "token_expired"
    r = await server.http.post("/v1/sessions/s_nope/tokens", json={"role": "clinician"}, headers=server.api())
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert API_KEY not in (await server.http.get("/metrics")).text


async def test_captions_are_stored_before_ack_and_replayed_to_late_joiners(server: RunningServer) -> None:
    s = await server.create_session()
    sid, pub = s["session_id"], s["publisher_token"]
    ev = await server.events(sid, pub)
    await ev.wait("session.created")
    await ev.send(
        {
            "type": "caption",
            "id": "c1",
            "text": "How have you been sleeping?",
            "speaker": "clinician",
            "start_s": 1.0,
            "end_s": 2.5,
        }
    )
    ack = (await ev.wait("transcript.ack"))[0]
    assert ack["ref"] == "c1" and ack["line_index"] == 0
    r = await server.http.post(
        f"/v1/sessions/{sid}/captions",
        headers=server.bearer(pub),
        json={
            "text": "Not well <b>at all</b>",
            "speaker": "patient",
            "start_s": 3.0,
            "end_s": 4.0,
            "id": "c2",
        },
    )
    assert r.status_code == 200 and r.json()["type"] == "transcript.ack" and r.json()["line_index"] == 1
    export = await server.http.get(f"/v1/sessions/{sid}/export", headers=server.bearer(s["clinician_token"]))
    assert [t["text"] for t in export.json()["transcript"]] == [
        "How have you been sleeping?",
        "Not well <b>at all</b>",
    ]
    # a clinician joining late gets the history, in seq order, then live events
    late = await server.events(sid, s["clinician_token"])
    await late.wait("transcript", 2)
    seqs = [e["seq"] for e in late.items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert late.items[0]["type"] == "session.created"
    await ev.send({"type": "caption", "text": "live", "start_s": 5.0, "end_s": 6.0})
    await late.wait("transcript", 3)
    # resuming after a seq skips what was seen
    resumed = await server.events(sid, s["clinician_token"], after_seq=seqs[-1])
    await resumed.wait("transcript", 1)
    assert all(e["seq"] > seqs[-1] for e in resumed.items)
    for e in (ev, late, resumed):
        await e.close()


async def test_bad_ws_messages_get_error_events_and_the_socket_stays(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    pub = await server.events(sid, s["publisher_token"])
    cases = [
        ("not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ('{"type": "no.such"}', "unknown_type"),
        ('{"type": "caption", "text": "", "start_s": 0, "end_s": 1}', "invalid_message"),
        ('{"type": "caption", "text": "x", "start_s": 5, "end_s": 1}', "invalid_message"),
        ('{"type": "caption", "text": "' + "a" * 70_000 + '", "start_s": 0, "end_s": 1}', "too_large"),
    ]
    for raw, _ in cases:
        await pub.send(raw)
    errors = await pub.wait("error", len(cases))
    assert [e["code"] for e in errors] == [c for _, c in cases]
    assert all(e["fatal"] is False for e in errors)
    await pub.send({"type": "ping", "id": "p1"})
    assert (await pub.wait("pong"))[0]["ref"] == "p1"
    clin = await server.events(sid, s["clinician_token"])
    await clin.send({"type": "caption", "id": "x", "text": "hi", "start_s": 0, "end_s": 1})
    err = (await clin.wait("error"))[0]
    assert err["code"] == "forbidden" and err["ref"] == "x"
    assert not pub.closed.is_set() and not clin.closed.is_set()
    text = (await server.http.get("/metrics")).text
    assert 'mllmdr_client_errors_total{code="bad_json"} 2' in text
    await pub.close()
    await clin.close()


async def test_bad_http_input(server: RunningServer) -> None:
    s = await server.create_session()
    sid, pub = s["session_id"], server.bearer(s["publisher_token"])
    r = await server.http.post(
        f"/v1/sessions/{sid}/offer", headers=pub, json={"sdp": "garbage", "type": "offer"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_sdp"
    r = await server.http.post(f"/v1/sessions/{sid}/offer", headers=pub, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_message"
    r = await server.http.post(
        f"/v1/sessions/{sid}/offer", headers=pub, json={"sdp": "x" * 300_000, "type": "offer"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    other = await server.create_session()
    r = await server.http.post(
        "/v1/sessions/s_unknown/offer", headers=pub, json={"sdp": "v=0", "type": "offer"}
    )
    assert r.status_code == 403  # a token never reaches another (even unknown) session
    r = await server.http.post("/v1/sessions/s_unknown/end", headers=server.api())
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await server.http.get(f"/v1/sessions/{other['session_id']}", headers=server.api())
    assert r.status_code == 200 and r.json()["state"] == "created"
