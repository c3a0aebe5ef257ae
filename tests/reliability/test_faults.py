"""Faults with the real core engine: publisher network drop, a stalled reader, an unwritable or full
database, the LLM backend down at session end. (kill -9 + restart: tests/server/test_durability.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import websockets
from server.conftest import Events, RunningServer, run_server
from server.peers import publish
from sqlalchemy import event

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import BackendError
from mllmdr_core.snapshot import SessionSnapshot

from .conftest import healthy, make_settings


async def test_network_drop_and_reconnect_is_one_continuous_session(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    async with run_server(make_settings(tmp_path, reconnect_grace_s=30.0), engine) as srv:
        s = await srv.create_session()
        sid, pub_token = s["session_id"], s["publisher_token"]
        clin = await srv.events(sid, s["clinician_token"])
        await _caption(srv, sid, pub_token, "before the drop", 0.5)
        pub = await publish(srv.http, sid, pub_token, recording)
        first = await clin.wait("indicators", 1, timeout=60)
        await pub.close()  # the network goes away: no session.end
        await clin.wait("session.status", pred=lambda e: e["state"] == "reconnecting", timeout=40)
        await _caption(srv, sid, pub_token, "during the drop", 7.0)
        before = len(clin.of("indicators"))
        pub2 = await publish(srv.http, sid, pub_token, recording)
        await clin.wait("session.status", 2, pred=lambda e: e["state"] == "live", timeout=30)
        after = (await clin.wait("indicators", before + 1, timeout=60))[before:]
        await _caption(srv, sid, pub_token, "after the reconnect", 20.0)
        r = await srv.http.post(f"/v1/sessions/{sid}/end", headers=srv.api())
        body = r.json()
        await pub2.close()
        export = (await srv.http.get(f"/v1/sessions/{sid}/export", headers=srv.api())).json()
        await clin.close()
    # one session: one session.created, media time continues across the gap, nothing lost, ended normally
    assert [e["type"] for e in export["events"]].count("session.created") == 1
    assert after[-1]["media_time_s"] > first[0]["media_time_s"]
    assert [t["text"] for t in export["transcript"]] == [
        "before the drop",
        "during the drop",
        "after the reconnect",
    ]
    closed = [e for e in export["events"] if e["type"] == "session.closed"]
    assert len(closed) == 1 and closed[0]["reason"] == "ended"
    assert body["state"] == "closed" and body["assessment"]["window_end_s"] >= after[-1]["media_time_s"] - 1.0


async def _caption(srv: RunningServer, sid: str, token: str, text: str, t: float) -> None:
    r = await srv.http.post(
        f"/v1/sessions/{sid}/captions",
        headers=srv.bearer(token),
        json={"text": text, "speaker": "patient", "start_s": t, "end_s": t + 0.5},
    )
    assert r.status_code == 200, r.text


async def _ack_latencies(srv: RunningServer, sid: str, token: str, n: int, t0: float) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await _caption(srv, sid, token, f"probe {i}", t0 + i)
        out.append(time.perf_counter() - start)
    return out


async def test_stalled_websocket_reader_does_not_slow_other_sessions(
    tmp_path: Path, engine: Any, recording: Path
) -> None:
    """Session A's clinician socket stops reading while A is flooded with events; session B (publishing
    media and captions) keeps its caption latency and indicator flow; A's reader is cut off, not waited on."""
    async with run_server(make_settings(tmp_path, ws_queue_events=50), engine) as srv:
        a = await srv.create_session()
        b = await srv.create_session()
        clin_b = await srv.events(b["session_id"], b["clinician_token"])
        pub_b = await publish(srv.http, b["session_id"], b["publisher_token"], recording)
        await clin_b.wait("indicators", 1, timeout=60)
        await _ack_latencies(srv, b["session_id"], b["publisher_token"], 3, 50.0)  # warm-up
        baseline = await _ack_latencies(srv, b["session_id"], b["publisher_token"], 10, 0.0)
        url = (
            srv.base.replace("http", "ws")
            + f"/v1/sessions/{a['session_id']}/events?token={a['clinician_token']}"
        )
        stalled = await websockets.connect(url, max_queue=1, max_size=None)  # never read from again
        flood_text = "x" * 3900
        indicators_before = len(clin_b.of("indicators"))

        async def flood() -> None:
            for i in range(120):
                await _caption(srv, a["session_id"], a["publisher_token"], flood_text, float(i))

        flooding = asyncio.ensure_future(flood())
        during = await _ack_latencies(srv, b["session_id"], b["publisher_token"], 10, 100.0)
        await flooding
        await clin_b.wait("indicators", indicators_before + 1, timeout=30)
        metrics = (await srv.http.get("/metrics")).text
        await pub_b.close()
        await clin_b.close()
        await stalled.close()
        await healthy(srv)
    p95_base, p95_during = float(np.percentile(baseline, 95)), float(np.percentile(during, 95))
    print(f"stalled reader: B ack p95 {p95_base * 1000:.0f} ms before, {p95_during * 1000:.0f} ms during")
    assert p95_during < max(1.0, 5 * p95_base)
    # B's media was received and kept up with: audio frames counted, none dropped
    assert _sample(metrics, 'mllmdr_frames_total{kind="audio"}') > 0
    assert _sample(metrics, 'mllmdr_frames_dropped_total{kind="audio"}') == 0.0


def _sample(metrics: str, series: str) -> float:
    """The value of one Prometheus series in ``/metrics`` text; 0 when absent (a counter never increased)."""
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(series + " ")]
    assert len(values) <= 1, series
    return values[0] if values else 0.0


@asynccontextmanager
async def sqlite_pragma(srv: RunningServer, pragma: Callable[[Any], str]) -> AsyncIterator[None]:
    """Every new connection of the server's store runs ``pragma(conn)`` (pooled ones are dropped first):
    a real SQLite read-only (``query_only``) or disk-full (``max_page_count``) condition."""
    async_engine = srv.app.state.server.store._engine
    engine = async_engine.sync_engine

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(pragma(dbapi_connection))
        cursor.close()

    event.listen(engine, "connect", on_connect)
    await async_engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", on_connect)
        await async_engine.dispose()


def _page_limit(dbapi_connection: Any) -> str:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA page_count")
    pages = int(cursor.fetchone()[0])
    cursor.close()
    return f"PRAGMA max_page_count = {pages}"


@pytest.mark.parametrize(
    "fault", ["read_only", "disk_full"], ids=["read-only database", "disk full (max_page_count)"]
)
async def test_unwritable_database_gives_clear_errors_and_no_crash(
    server: RunningServer, fault: Literal["read_only", "disk_full"]
) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    pub = await server.events(sid, s["publisher_token"])
    await pub.wait("session.created")
    pragma = (lambda _c: "PRAGMA query_only = ON") if fault == "read_only" else _page_limit
    async with sqlite_pragma(server, pragma):
        for i in range(60):  # disk full: the last free page fills after a few lines
            text = f"line {i} " + "y" * 3900
            cap = {"type": "caption", "id": f"c{i}", "text": text, "start_s": float(i), "end_s": i + 0.5}
            await pub.send(cap)
            while len(pub.of("transcript.ack")) < i + 1 and not pub.of("error"):
                await asyncio.sleep(0.02)
            if pub.of("error"):
                break
        err = (await pub.wait("error", timeout=30))[0]
        assert err["code"] == "storage_error" and err["fatal"] is False
        assert "readonly" in err["message"] or "full" in err["message"], err["message"]
        r = await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "z" * 3900, "start_s": 99.0, "end_s": 99.5},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_error"
        assert (await server.http.get("/healthz")).status_code == 200
    # writable again: the same session carries on and ends with a stored final assessment
    acks = len(pub.of("transcript.ack"))
    await pub.send(
        {"type": "caption", "id": "back", "text": "writable again", "start_s": 100.0, "end_s": 101.0}
    )
    await pub.wait("transcript.ack", acks + 1, timeout=30)
    r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
    assert r.json()["state"] == "closed" and r.json()["assessment"]["kind"] == "final"
    export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
    assert export["transcript"][-1]["text"] == "writable again"
    await healthy(server)
    await pub.close()


class BackendDownEngine:
    """The real engine whose LLM backend is down for the first ``failures`` assessments of each session."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.info = inner.info
        self.config = inner.config
        self.failures = failures
        self.calls: dict[str, int] = {}

    @property
    def transcript_source(self) -> str:
        return str(self.inner.transcript_source)

    def new_state(self, session_id: str) -> Any:
        return self.inner.new_state(session_id)

    def assess(
        self, snap: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment:
        self.calls[session_id] = self.calls.get(session_id, 0) + 1
        if self.calls[session_id] <= self.failures:
            raise BackendError("LLM backend unreachable: connection refused (test)")
        result: Assessment = self.inner.assess(snap, session_id=session_id, kind=kind)
        return result


@asynccontextmanager
async def ended_with_backend_down(
    tmp_path: Path, engine: Any, failures: int
) -> AsyncIterator[tuple[RunningServer, str, dict[str, Any], Events, BackendDownEngine]]:
    """A session with one caption, ended while the backend fails ``failures`` times for it."""
    flaky = BackendDownEngine(engine, failures)
    async with run_server(make_settings(tmp_path, assess_retry_base_s=0.2), flaky) as srv:
        s = await srv.create_session()
        sid = s["session_id"]
        clin = await srv.events(sid, s["clinician_token"])
        await _caption(srv, sid, s["publisher_token"], "I have been sleeping badly", 1.0)
        r = await srv.http.post(f"/v1/sessions/{sid}/end", headers=srv.api())
        try:
            yield srv, sid, r.json(), clin, flaky
        finally:
            await clin.close()


async def test_backend_down_briefly_at_session_end_is_retried(tmp_path: Path, engine: Any) -> None:
    async with ended_with_backend_down(tmp_path, engine, failures=2) as (srv, sid, end, clin, flaky):
        assert end["state"] == "closed" and end["assessment"]["kind"] == "final"
        assert flaky.calls[sid] == 3
        retries = [e for e in clin.items if e["type"] == "warning" and e["code"] == "assessment_retry"]
        assert len(retries) == 2
        export = (await srv.http.get(f"/v1/sessions/{sid}/export", headers=srv.api())).json()
        assert export["assessment"] == end["assessment"]


async def test_backend_down_for_good_is_a_clear_pending_state_not_a_crash(
    tmp_path: Path, engine: Any
) -> None:
    async with ended_with_backend_down(tmp_path, engine, failures=1000) as (srv, sid, end, clin, _):
        assert end["state"] == "pending" and end.get("assessment") is None, end
        status = await clin.wait("session.status", pred=lambda e: e["state"] == "pending", timeout=60)
        assert status[0]["detail"]
        await healthy(srv)
        info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()
        assert info["state"] == "pending" and info["final_assessment"] is None
        export = (await srv.http.get(f"/v1/sessions/{sid}/export", headers=srv.api())).json()
        assert export["transcript"][0]["text"] == "I have been sleeping badly"  # the data is kept


async def test_backend_down_longer_than_the_retries_leaves_the_session_pending(
    tmp_path: Path, engine: Any
) -> None:
    async with ended_with_backend_down(tmp_path, engine, failures=4) as (srv, sid, end, _clin, flaky):
        assert end.get("assessment") is not None or end["state"] != "closed", end
        deadline = time.monotonic() + 60
        final = None
        while final is None and time.monotonic() < deadline:
            info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()
            final = info["final_assessment"]
            await asyncio.sleep(0.5)
        assert final is not None and flaky.calls[sid] >= 5
