"""Security beyond tests/server/test_app.py (which covers forged/expired/cross-session tokens on REST,
clinician→offer/captions refused, the WS size limit): tampered, alg=none, wrong-issuer and replayed
tokens, role limits on every route, secrets never in the real CLI's logs, rate and size limits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from server.conftest import API_KEY, RunningServer, free_port, run_server
from server.peers import publish

from .conftest import healthy, make_settings

ROOT = Path(__file__).resolve().parents[2]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(sid: str, role: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sid,
        "role": role,
        "iat": now,
        "exp": now + 600,
        "iss": "mllmdr-server",
        "jti": "j1",
        **over,
    }


def _hs512(claims: dict[str, Any], secret: str) -> str:
    """Signed with the right secret but HS512 (only HS256 is accepted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS512")


async def test_tampered_unsigned_and_foreign_tokens_are_refused(server: RunningServer) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    secret = server.settings.jwt_secret or ""
    clin_header, _payload, clin_sig = s["clinician_token"].split(".")
    bad = {
        # payload swapped to role=publisher, original signature kept
        "tampered": f"{clin_header}.{_b64(_claims(sid, 'publisher'))}.{clin_sig}",
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(sid, 'publisher'))}.",
        "wrong_issuer": jwt.encode(_claims(sid, "publisher", iss="someone-else"), secret, algorithm="HS256"),
        "no_jti": jwt.encode(
            {k: v for k, v in _claims(sid, "publisher").items() if k != "jti"}, secret, algorithm="HS256"
        ),
        "hs512": _hs512(_claims(sid, "publisher"), secret),
        "the_api_key": API_KEY,
        "empty": "",
        "garbage": "a.b.c",
    }
    cap = {"text": "forged line", "start_s": 0.0, "end_s": 1.0}
    for name, token in bad.items():
        headers = server.bearer(token) if token else {}
        r = await server.http.post(f"/v1/sessions/{sid}/captions", json=cap, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "auth_failed", (name, r.text)
        ev = await server.events(sid, token)
        await asyncio.wait_for(ev.closed.wait(), 10)
        assert ev.close_code == 4401, (name, ev.close_code)
    # a role not in the enum, correctly signed, is still refused
    odd = jwt.encode(_claims(sid, "admin"), secret, algorithm="HS256")
    r = await server.http.get(f"/v1/sessions/{sid}", headers=server.bearer(odd))
    assert r.status_code == 403
    export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
    assert export["transcript"] == []


async def test_role_limits_on_every_route(server: RunningServer) -> None:
    a = await server.create_session()
    b = await server.create_session()
    sid = a["session_id"]
    pub, clin = server.bearer(a["publisher_token"]), server.bearer(a["clinician_token"])
    # publisher tokens: no export, no token minting, nothing of another session (REST or WS)
    assert (await server.http.get(f"/v1/sessions/{sid}/export", headers=pub)).status_code == 403
    r = await server.http.post(f"/v1/sessions/{sid}/tokens", json={"role": "clinician"}, headers=pub)
    assert r.status_code == 401
    for path in ("", "/export"):
        r = await server.http.get(f"/v1/sessions/{b['session_id']}{path}", headers=pub)
        assert r.status_code == 403
    ev = await server.events(b["session_id"], a["publisher_token"])
    await asyncio.wait_for(ev.closed.wait(), 10)
    assert ev.close_code == 4403
    # clinician tokens: read-only — no end, no captions over WS, no session creation
    assert (await server.http.post(f"/v1/sessions/{sid}/end", headers=clin)).status_code == 403
    assert (await server.http.post("/v1/sessions", json={}, headers=clin)).status_code == 401
    ws = await server.events(sid, a["clinician_token"])
    await ws.send({"type": "session.end", "id": "e"})
    assert (await ws.wait("error"))[0]["code"] == "forbidden"
    info = (await server.http.get(f"/v1/sessions/{sid}", headers=clin)).json()
    assert info["state"] == "created"
    await ws.close()


async def test_replayed_tokens_after_end_and_after_a_secret_change(tmp_path: Path, engine: Any) -> None:
    settings = make_settings(tmp_path)
    async with run_server(settings, engine) as srv:
        s = await srv.create_session()
        sid = s["session_id"]
        r = await srv.http.post(f"/v1/sessions/{sid}/end", headers=srv.bearer(s["publisher_token"]))
        assert r.json()["state"] == "closed"
        # the same publisher token replayed after the end: nothing more is accepted
        cap = {"text": "late", "start_s": 0.0, "end_s": 1.0}
        r = await srv.http.post(
            f"/v1/sessions/{sid}/captions", json=cap, headers=srv.bearer(s["publisher_token"])
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_closed"
        r = await srv.http.post(
            f"/v1/sessions/{sid}/offer",
            json={"sdp": "v=0", "type": "offer"},
            headers=srv.bearer(s["publisher_token"]),
        )
        assert r.status_code == 409
    # the server restarts with a rotated JWT secret: old tokens are dead, the API key mints new ones
    rotated = settings.model_copy(update={"jwt_secret": "r" * 32, "port": free_port()})
    async with run_server(rotated, engine) as srv:
        r = await srv.http.get(f"/v1/sessions/{sid}", headers=srv.bearer(s["clinician_token"]))
        assert r.status_code == 401 and r.json()["error"]["code"] == "auth_failed"
        r = await srv.http.post(f"/v1/sessions/{sid}/tokens", json={"role": "clinician"}, headers=srv.api())
        fresh = r.json()["token"]
        info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.bearer(fresh))).json()
        assert info["state"] == "closed" and info["final_assessment"]["kind"] == "final"


async def test_request_size_limits(server: RunningServer) -> None:
    s = await server.create_session()
    sid, pub = s["session_id"], server.bearer(s["publisher_token"])
    big = json.dumps({"text": "a" * 300_000, "start_s": 0, "end_s": 1})
    for path in ("/v1/sessions", f"/v1/sessions/{sid}/captions", f"/v1/sessions/{sid}/offer"):
        r = await server.http.post(path, content=big, headers={**pub, "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", path

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        for _ in range(100):
            yield b"x" * 10_000

    r = await server.http.post(f"/v1/sessions/{sid}/captions", content=chunks(), headers=pub)
    assert r.status_code == 413
    r = await server.http.post(
        f"/v1/sessions/{sid}/captions", json={"text": "t" * 4001, "start_s": 0, "end_s": 1}, headers=pub
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_message"
    await healthy(server)


async def test_live_session_limit_counts_sessions_with_media(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    """Created-but-unused sessions do not hold the cap (issue 21: 30 unused sessions blocked the server)."""
    async with run_server(make_settings(tmp_path, max_sessions=1), engine) as srv:
        unused = [await srv.create_session() for _ in range(3)]  # none has media: all accepted
        a = unused[0]
        clin = await srv.events(a["session_id"], a["clinician_token"])
        pub = await publish(srv.http, a["session_id"], a["publisher_token"], recording)
        await clin.wait("session.status", pred=lambda e: e["state"] == "live", timeout=30)
        r = await srv.http.post("/v1/sessions", json={}, headers=srv.api())
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert "1 live sessions" in r.json()["error"]["message"]
        await pub.close()
        await clin.close()


@pytest.fixture
def cli_server(tmp_path: Path, tiny_bundle: Path) -> Any:
    """The real ``python -m stream_server`` at --log-level debug, stdout+stderr captured to a file."""
    port = free_port()
    log = tmp_path / "server.log"
    env = dict(
        os.environ,
        MLLMDR_API_KEY=API_KEY,
        MLLMDR_JWT_SECRET="cli-secret-" + "q" * 24,
        MLLMDR_SESSION_CREATE_PER_MIN="3",
        MLLMDR_ICE_HOST_ADDRESSES="127.0.0.1",
        MLLMDR_VAR_DIR=str(tmp_path / "var"),
    )
    cmd = [sys.executable, "-m", "stream_server", "--bundle", str(tiny_bundle), "--port", str(port)]
    cmd += ["--database-url", f"sqlite+aiosqlite:///{tmp_path}/cli.db", "--log-level", "debug"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(1200):
                try:
                    if httpx.get(base + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            yield base, log, env["MLLMDR_JWT_SECRET"]
        finally:
            proc.terminate()
            proc.wait(30)


async def test_cli_rate_limit_and_no_secret_in_debug_logs(cli_server: Any) -> None:
    base, log, jwt_secret = cli_server
    api = {"Authorization": f"Bearer {API_KEY}"}
    tokens: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        # wrong keys that contain the real one, a valid key, failures of every kind
        for wrong in (API_KEY + "x", "x" + API_KEY, API_KEY[:-1]):
            r = await http.post("/v1/sessions", json={}, headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401
        codes = []
        for _ in range(4):
            r = await http.post("/v1/sessions", json={}, headers=api)
            codes.append(r.status_code)
            if r.status_code == 201:
                created = r.json()
                tokens += [created["publisher_token"], created["clinician_token"]]
        assert codes == [201, 201, 201, 429]  # MLLMDR_SESSION_CREATE_PER_MIN=3
        sid = created["session_id"]
        r = await http.post(f"/v1/sessions/{sid}/tokens", json={"role": "clinician"}, headers=api)
        tokens.append(r.json()["token"])
        r = await http.post(
            f"/v1/sessions/{sid}/captions",
            json={"text": "hi", "start_s": 0, "end_s": 1},
            headers={"Authorization": f"Bearer {created['publisher_token']}"},
        )
        assert r.status_code == 200
        r = await http.post(f"/v1/sessions/{sid}/end", headers=api)
        assert r.json()["state"] == "closed"
    import websockets

    url = base.replace("http", "ws") + f"/v1/sessions/{sid}/events?token={created['clinician_token']}"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    await asyncio.sleep(0.5)
    text = log.read_text(errors="replace")
    assert "DEBUG" in text or "INFO" in text  # the log really was captured at a verbose level
    assert API_KEY not in text
    assert jwt_secret not in text
    leaked = [t for t in tokens if t in text]
    assert leaked == [], f"{len(leaked)} session tokens in the debug log"
