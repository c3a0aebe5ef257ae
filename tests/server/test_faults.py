"""Faults at session end: the LLM backend fails (then recovers, or stays down)."""

from __future__ import annotations

import asyncio
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


async def test_backend_failures_are_retried(tmp_path: Path, tiny_bundle: Path) -> None:
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

        await ev.wait("session.closed")


async def test_backend_down_at_end_session_pending_then_assessed(tmp_path: Path, tiny_bundle: Path) -> None:
    """Backend down past the retries: the session is ``pending`` with its features kept on disk; the
    assessment is retried in the background (and after a restart) and delivered when the backend is back."""
    engine = CoreEngine(tiny_bundle)
    flaky = FlakyBackend(engine._assessor.backend, failures=10**6)
    engine._assessor.backend = flaky
    settings = make_settings(tmp_path, assess_retry_base_s=0.05, pending_retry_max_s=0.2)
    async with run_server(settings, engine) as server:
        s = await server.create_session()
        sid = s["session_id"]
        ev = await server.events(sid, s["clinician_token"])
        await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "kept", "speaker": "patient", "start_s": 0, "end_s": 1},
        )
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert r.json() == {"session_id": sid, "state": "pending", "assessment": None}
        await ev.wait("warning", pred=lambda e: e["code"] == "assessment_pending")
        info = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()
        assert info["state"] == "pending" and info["final_assessment"] is None
        kept = Path(settings.var_dir) / "pending" / f"{sid}.npz"
        assert kept.is_file()
        calls = flaky.calls
        await asyncio.sleep(1.0)
        assert flaky.calls > calls  # retried in the background
        again = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert again.json()["state"] == "pending"
        assert not ev.of("session.closed") and not ev.closed.is_set()  # the clinician still listens

    # restart with the backend still down: the session stays pending; the backend comes back: assessed
    async with run_server(settings, engine) as server:
        ev = await server.events(sid, s["clinician_token"])
        info = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()
        assert info["state"] == "pending"
        flaky.failures = 0
        result = (await ev.wait("assessment.result", timeout=60))[0]["assessment"]
        assert result["kind"] == "final" and result["session_id"] == sid
        assert result["model"]["transcript_source"] == "captions"  # the kept transcript was used
        closed = (await ev.wait("session.closed"))[0]
        assert closed["final_assessment"] is True and closed["reason"] == "ended"
        await asyncio.wait_for(ev.closed.wait(), 5)
        info = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()
        assert info["state"] == "closed" and info["final_assessment"] == result
        assert not kept.exists()
        # a clinician who reconnects gets the assessment from the history
        late = await server.events(sid, s["clinician_token"])
        await asyncio.wait_for(late.closed.wait(), 10)
        assert late.of("assessment.result")[0]["assessment"] == result
