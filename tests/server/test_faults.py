"""Faults at session end: the LLM backend fails (then recovers, or stays down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mllmdr_core.backends.base import ItemOutput, ItemRequest
from mllmdr_core.errors import BackendError
from stream_server.engine import CoreEngine

from .conftest import make_settings, run_server


class FlakyBackend:
    """Wraps the real backend; raises ``BackendError`` for the first ``failures`` calls."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.failures = failures
        self.calls = 0

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendError("LLM backend unreachable (injected)")
        result: list[ItemOutput] = self.inner.generate(requests)
        return result

    def close(self) -> None:
        self.inner.close()


async def test_backend_failures_are_retried_then_reported(tmp_path: Path, tiny_bundle: Path) -> None:
    engine = CoreEngine(tiny_bundle)
    flaky = FlakyBackend(engine._assessor.backend, failures=2)
    engine._assessor.backend = flaky
    async with run_server(make_settings(tmp_path, assess_retry_base_s=0.05), engine) as server:
        s = await server.create_session()
        sid = s["session_id"]
        ev = await server.events(sid, s["clinician_token"])
        await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "I sleep badly", "speaker": "patient", "start_s": 0, "end_s": 1},
        )
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert r.json()["assessment"]["kind"] == "final"
        retries = await ev.wait("warning", 2, pred=lambda e: e["code"] == "assessment_retry")
        assert [w["detail"]["attempt"] for w in retries] == [1, 2] and flaky.calls == 3

        flaky.calls, flaky.failures = 0, 99  # down for good: a clear error, a clean close, data kept
        s = await server.create_session()
        sid = s["session_id"]
        ev = await server.events(sid, s["clinician_token"])
        await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "kept", "speaker": "patient", "start_s": 0, "end_s": 1},
        )
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert r.json()["state"] == "closed" and r.json()["assessment"] is None
        err = (await ev.wait("error"))[0]
        assert err["code"] == "backend_unavailable"
        closed = (await ev.wait("session.closed"))[0]
        assert closed["final_assessment"] is False
        export = (await server.http.get(f"/v1/sessions/{sid}/export", headers=server.api())).json()
        assert [t["text"] for t in export["transcript"]] == ["kept"]
        assert (await server.http.get("/readyz")).status_code == 200
