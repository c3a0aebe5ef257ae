"""JSON limits (stream_server/json_limits.py): nesting depth over 64 is a typed ``invalid_message`` on the
WebSocket (socket stays usable) and over REST (HTTP 400); a non-UTF-8 text frame closes with 1007 and
one log line without a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from server.conftest import RunningServer

from mllmdr_core.errors import ProtocolError
from stream_server.json_limits import (
    MAX_JSON_DEPTH,
    QuietInvalidUtf8,
    check_json_depth,
    json_depth,
    json_too_deep,
)

from .conftest import healthy


def _nested(depth: int) -> str:
    return '{"type": "caption", "text": ' + "[" * depth + "]" * depth + "}"


def test_json_depth_counts_arrays_and_objects_outside_strings() -> None:
    assert json_depth("") == 0
    assert json_depth('"[[[["') == 0
    assert json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth('{"a": "\\"[[[", "b": [[]]}') == 3  # escaped quote does not end the string
    assert json_depth(b"[[[]]]") == 3
    assert json_depth(_nested(1000)) == 1001
    assert json_depth("]]]][") == 1  # not validated: unbalanced text still gets a number


def test_check_json_depth_raises_invalid_message_over_the_limit() -> None:
    check_json_depth(_nested(MAX_JSON_DEPTH - 1))
    assert json_too_deep(_nested(MAX_JSON_DEPTH - 1)) is None
    with pytest.raises(ProtocolError, match="nested 65 levels deep; the limit is 64") as info:
        check_json_depth(_nested(MAX_JSON_DEPTH))
    assert info.value.code == "invalid_message"


def test_invalid_utf8_filter_makes_one_warning_line() -> None:
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Invalid UTF-8 sequence received from client.",
        None,
        exc_info,
    )
    other = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "other", None, exc_info)
    assert QuietInvalidUtf8().filter(record) and QuietInvalidUtf8().filter(other)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert logging.Formatter().format(record) == "WebSocket text frame is not UTF-8: closed with 1007"
    assert other.levelno == logging.ERROR and other.exc_info is exc_info


async def test_deep_json_over_websocket_is_typed_and_the_socket_stays_usable(server: RunningServer) -> None:
    s = await server.create_session()
    pub = await server.events(s["session_id"], s["publisher_token"])
    await pub.wait("session.created")
    for depth in (65, 500, 985, 2000, 20_000):
        await pub.send(_nested(depth))
    errors = await pub.wait("error", 5, timeout=20)
    assert [e["code"] for e in errors] == ["invalid_message"] * 5
    assert all(e["fatal"] is False and "nested" in e["message"] for e in errors)
    assert not pub.closed.is_set()
    await pub.send({"type": "ping", "id": "after"})
    assert (await pub.wait("pong"))[0]["ref"] == "after"
    await pub.close()


async def test_deep_json_over_rest_is_400_invalid_message(server: RunningServer) -> None:
    s = await server.create_session()
    headers = {**server.bearer(s["publisher_token"]), "content-type": "application/json"}
    for depth in (65, 985, 5000):
        body = '{"text": "x", "start_s": 0, "end_s": 1, "id": ' + "[" * depth + "]" * depth + "}"
        r = await server.http.post(f"/v1/sessions/{s['session_id']}/captions", headers=headers, content=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_message" and "nested" in r.json()["error"]["message"]
    # unparseable bodies are typed too, never ``internal``
    for raw in (b"{", b"\xff\xfe", b"[1,]", b"null"):
        r = await server.http.post(f"/v1/sessions/{s['session_id']}/captions", headers=headers, content=raw)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_message", (raw, r.text)
    await healthy(server)


async def test_invalid_utf8_text_frame_closes_1007_with_one_log_line(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    s = await server.create_session()
    pub = await server.events(s["session_id"], s["publisher_token"])
    await pub.wait("session.created")
    await pub.ws.send(b"\xff\xfe{}", text=True)  # a text frame whose payload is not UTF-8
    await asyncio.wait_for(pub.closed.wait(), 10)
    assert pub.close_code == 1007
    await asyncio.sleep(0.2)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in lines] == [
        ("WARNING", "WebSocket text frame is not UTF-8: closed with 1007", None)
    ]
    other = await server.events(s["session_id"], s["clinician_token"])  # the server is fine
    await other.send(json.dumps({"type": "ping", "id": "p"}))
    assert (await other.wait("pong"))[0]["ref"] == "p"
    await other.close()
