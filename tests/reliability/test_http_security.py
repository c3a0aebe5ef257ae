"""HTTP hardening (stream_server/http_security.py) against a real uvicorn server on loopback: a 1 MiB
request header gets 431, a foreign WebSocket ``Origin`` is refused, every page carries the security
headers, and /favicon.ico is served and linked from both pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import websockets
from server.conftest import RunningServer, run_server

from stream_server.http_security import content_security_policy, header_bytes, origin_allowed, origin_of
from stream_server.settings import Settings

from .conftest import healthy, make_settings


def test_origin_allowed() -> None:
    allowed = ("https://platform.example", "http://127.0.0.1:8765")
    assert origin_allowed(None, "x:1", allowed)  # no Origin: not a browser
    assert origin_allowed("http://10.0.0.5:8765", "10.0.0.5:8765", allowed)  # same host:port as reached at
    assert origin_allowed("https://Platform.Example/", "srv:8765", allowed)
    assert origin_allowed("http://127.0.0.1:8765", None, allowed)
    assert not origin_allowed("https://evil.example", "srv:8765", allowed)
    assert not origin_allowed("https://platform.example:444", "srv:8765", allowed)
    assert not origin_allowed("null", "srv:8765", allowed)
    assert not origin_allowed("http://srv:8766", "srv:8765", allowed)
    assert origin_of("https://a.example:8443/path?q") == "https://a.example:8443"


def test_header_bytes_and_csp() -> None:
    scope: dict[str, Any] = {"raw_path": b"/x", "query_string": b"a=1", "headers": [(b"host", b"h")]}
    assert header_bytes(scope) == 2 + 3 + 5
    csp = content_security_policy("'self' https://platform.example")
    assert "unsafe-eval" not in csp and "unsafe-inline" not in csp
    assert csp.endswith("frame-ancestors 'self' https://platform.example")


def test_allowed_origins_setting_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLMDR_ALLOWED_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("MLLMDR_FRAME_ANCESTORS", "'self' https://a.example")
    s = Settings.from_env()
    assert s.allowed_origins == ["https://a.example", "https://b.example"]
    assert s.frame_ancestors == "'self' https://a.example"


async def test_a_1_mib_header_gets_431_and_the_server_stays_healthy(server: RunningServer) -> None:
    for size in (20 * 1024, 1 << 20):
        r = await server.http.get("/healthz", headers={"X-Big": "a" * size})
        assert r.status_code == 431, (size, r.status_code)
        assert r.json()["error"]["code"] == "too_large"
    r = await server.http.get("/healthz", headers={"X-Fine": "a" * 8 * 1024})
    assert r.status_code == 200
    await healthy(server)


async def _ws_status(srv: RunningServer, origin: str | None, token: str, sid: str) -> int:
    url = srv.base.replace("http", "ws") + f"/v1/sessions/{sid}/events?token={token}"
    try:
        async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.recv()  # session.created: the socket works
            return 101
    except websockets.InvalidStatus as exc:
        return int(exc.response.status_code)


async def test_websocket_origin_allowlist(tmp_path: Path, engine: Any) -> None:
    settings = make_settings(tmp_path, allowed_origins=["https://platform.example"])
    async with run_server(settings, engine) as srv:
        s = await srv.create_session()
        sid, token = s["session_id"], s["clinician_token"]
        assert await _ws_status(srv, None, token, sid) == 101  # SDKs and servers send no Origin
        assert await _ws_status(srv, srv.base, token, sid) == 101  # the server's own pages
        assert await _ws_status(srv, "https://platform.example", token, sid) == 101
        assert await _ws_status(srv, "https://evil.example", token, sid) == 403
        assert await _ws_status(srv, "null", token, sid) == 403
        await healthy(srv)


async def test_every_page_has_security_headers_and_a_favicon(tmp_path: Path, engine: Any) -> None:
    settings = make_settings(tmp_path, frame_ancestors="'self' https://platform.example")
    async with run_server(settings, engine) as srv:
        for path in ("/panel/", "/patient/", "/healthz", "/static/style.css", "/favicon.ico", "/nope"):
            r = await srv.http.get(path)
            assert r.status_code == (404 if path == "/nope" else 200), path
            csp = r.headers["content-security-policy"]
            assert "unsafe-eval" not in csp and "frame-ancestors 'self' https://platform.example" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        icon = await srv.http.get("/favicon.ico")
        assert icon.headers["content-type"] == "image/svg+xml" and icon.text.startswith("<svg")
        for page in ("/panel/", "/patient/"):
            assert '<link rel="icon" href="/favicon.ico"' in (await srv.http.get(page)).text
