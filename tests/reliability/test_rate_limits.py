"""Rate limits (issue 21 item 6): token buckets per session (checkpoints, captions) and per API key
(session creation) → 429 with Retry-After over REST, an ``error`` event ``rate_limited`` with
``retry_after_s`` on the WebSocket; one client flooding checkpoints does not starve another session."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from server.conftest import run_server

from mllmdr_core.errors import ProtocolError
from stream_server.ratelimit import Buckets, TokenBucket, retry_after_of

from .conftest import healthy, make_settings


def test_token_bucket_burst_then_steady_rate() -> None:
    bucket = TokenBucket(burst=2, per_s=0.5, now=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(2.0)  # empty: one token in 2 s
    assert bucket.take(1.0) == pytest.approx(1.0)  # half a token back
    assert bucket.take(2.0) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.take(100.0) == 0.0  # refilled to the burst, no more
    assert bucket.take(100.0) > 0.0


def test_buckets_are_per_key_and_say_when_to_retry() -> None:
    now = [0.0]
    limits = Buckets("checkpoint requests", burst=1, per_s=0.1, clock=lambda: now[0])
    limits.check("s_a")
    with pytest.raises(ProtocolError) as info:
        limits.check("s_a")
    assert info.value.code == "rate_limited" and retry_after_of(info.value) == pytest.approx(10.0)
    limits.check("s_b")  # another key has its own budget
    now[0] = 10.0
    limits.check("s_a")


async def _caption(srv: Any, s: dict[str, Any], t: float) -> None:
    r = await srv.http.post(
        f"/v1/sessions/{s['session_id']}/captions",
        json={"text": "I feel tired most days", "speaker": "patient", "start_s": t, "end_s": t + 1},
        headers=srv.bearer(s["publisher_token"]),
    )
    assert r.status_code == 200, r.text


async def test_checkpoint_flood_is_limited_and_does_not_starve_another_session(
    tmp_path: Path, engine: Any
) -> None:
    async with run_server(make_settings(tmp_path), engine) as srv:
        a, b = await srv.create_session(), await srv.create_session()
        await _caption(srv, a, 0.0)
        await _caption(srv, b, 0.0)
        flood = [
            srv.http.post(
                f"/v1/sessions/{a['session_id']}/checkpoint", headers=srv.bearer(a["clinician_token"])
            )
            for _ in range(20)
        ]
        answers = await asyncio.gather(*flood)
        codes = [r.status_code for r in answers]
        assert codes.count(429) >= 15 and codes.count(200) <= 5, codes  # burst 3 (checkpoint_burst)
        limited = next(r for r in answers if r.status_code == 429)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        t0 = time.perf_counter()
        r = await srv.http.post(
            f"/v1/sessions/{b['session_id']}/checkpoint?wait=true", headers=srv.bearer(b["clinician_token"])
        )
        took = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["assessment"]["kind"] == "checkpoint", r.text
        assert took < 30.0, took
        await healthy(srv)


async def test_websocket_checkpoint_and_caption_limits_answer_typed_errors(
    tmp_path: Path, engine: Any
) -> None:
    settings = make_settings(tmp_path, checkpoint_burst=1, caption_burst=2, caption_per_s=0.5)
    async with run_server(settings, engine) as srv:
        s = await srv.create_session()
        clin = await srv.events(s["session_id"], s["clinician_token"])
        for i in range(3):
            await clin.send({"type": "checkpoint.request", "id": f"k{i}"})
        limited = await clin.wait("error", pred=lambda e: e["code"] == "rate_limited")
        assert limited[0]["ref"] in ("k1", "k2") and 0 < limited[0]["retry_after_s"] <= 10.0
        pub = await srv.events(s["session_id"], s["publisher_token"])
        for i in range(3):
            cap = {"type": "caption", "id": f"c{i}", "text": "hello", "start_s": i, "end_s": i + 0.5}
            await pub.send(cap)
        refused = await pub.wait("error", pred=lambda e: e.get("ref") == "c2")
        assert refused[0]["code"] == "rate_limited" and refused[0]["retry_after_s"] == pytest.approx(
            2.0, abs=0.5
        )
        assert {e["ref"] for e in pub.of("transcript.ack")} == {"c0", "c1"}
        r = await srv.http.post(
            f"/v1/sessions/{s['session_id']}/captions",
            json={"text": "over REST", "start_s": 5, "end_s": 6},
            headers=srv.bearer(s["publisher_token"]),
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        await clin.close()
        await pub.close()


async def test_session_creation_limit_says_when_to_retry(tmp_path: Path, engine: Any) -> None:
    async with run_server(make_settings(tmp_path, session_create_per_min=2), engine) as srv:
        codes = [(await srv.http.post("/v1/sessions", json={}, headers=srv.api())) for _ in range(3)]
        assert [r.status_code for r in codes] == [201, 201, 429]
        assert codes[2].json()["error"]["code"] == "rate_limited"
        assert 1 <= int(codes[2].headers["retry-after"]) <= 30  # 2 per minute: one back in 30 s
