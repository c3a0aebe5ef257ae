"""Pending final assessments with several instances on one real Postgres: the claim is atomic, a claim left
by a dead instance expires, and exactly one instance stores the final assessment."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from mllmdr_core.snapshot import SessionSnapshot
from stream_server.engine import CoreEngine
from stream_server.protocol import _example_assessment
from stream_server.store import Store, sessions

from .conftest import PgCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.conftest import make_settings, run_server
from server.test_faults import FlakyBackend


class CountingEngine:
    """One instance's view of the shared real engine: counts the assessments this instance asks for."""

    def __init__(self, inner: CoreEngine) -> None:
        self.inner = inner
        self.calls = 0
        self.made = 0  # assessments the backend answered

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def assess(self, snap: SessionSnapshot, *, session_id: str, kind: Any) -> Any:
        self.calls += 1
        result = self.inner.assess(snap, session_id=session_id, kind=kind)
        self.made += 1
        return result


async def test_claim_is_atomic_across_connections(pg: PgCluster) -> None:
    db = await pg.create_db("claims")
    a, b = Store(db), Store(db)
    await asyncio.gather(a.init(), b.init())  # concurrent schema creation + migration
    await a.create_session("s1", "bundle", {})
    await a.park_pending("s1", b"npz", {"reason": "ended"}, owner="A", claim_ttl_s=60.0)
    await a.release_claim("s1", "A")
    owners = [f"{side}{i}" for i in range(10) for side in "ab"]
    won = await asyncio.gather(
        *(
            (a if o[0] == "a" else b).claim_pending("s1", o, 60.0)
            for o in owners  # 20 claimants on two connection pools, at once
        )
    )
    assert sum(won) == 1
    winner = owners[won.index(True)]
    assert (await b.get_session("s1") or {})["claimed_by"] == winner
    final = _example_assessment("s1", "final")
    loser = next(o for o in owners if o != winner)
    finishers = ((a, loser), (b, winner)) if winner[0] == "b" else ((b, loser), (a, winner))
    results = await asyncio.gather(*(st.finish_pending("s1", o, final) for st, o in finishers))
    assert results == [False, True]
    assert len(await a.assessments("s1", "final")) == 1
    await asyncio.gather(a.close(), b.close())


async def test_pending_session_assessed_exactly_once_by_two_instances_after_a_dead_claim(
    pg: PgCluster, bundle: Path, tmp_path: Path
) -> None:
    db = await pg.create_db("pending")
    engine = CoreEngine(bundle)
    flaky = FlakyBackend(engine._assessor.backend, failures=10**6)  # the LLM backend is down
    engine._assessor.backend = flaky
    fast: dict[str, Any] = dict(
        database_url=db,
        assess_retry_base_s=0.05,
        pending_retry_max_s=0.2,
        pending_claim_ttl_s=1.0,
        pending_scan_s=0.2,
    )
    parker = CountingEngine(engine)
    # 1. instance P: the session ends while the backend is down → pending, claimed by P
    async with run_server(make_settings(tmp_path / "p", **fast), parker) as p:
        s = await p.create_session()
        sid = s["session_id"]
        r = await p.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=p.bearer(s["publisher_token"]),
            json={"text": "I sleep badly", "speaker": "patient", "start_s": 0, "end_s": 1},
        )
        assert r.status_code == 200
        r = await p.http.post(f"/v1/sessions/{sid}/end", headers=p.api())
        assert r.json()["state"] == "pending"
        p_owner = p.app.state.server.pending.owner
    # 2. P dies holding its claim: the row as kill -9 leaves it (P's clean exit above released it)
    store = Store(db)
    dead_until = time.time() + 1.5
    await store._write(
        sessions.update().where(sessions.c.id == sid).values(claimed_by=p_owner, claimed_until=dead_until)
    )
    # 3. instances A and B (own var dirs: P's local snapshot file is not theirs) scan every 0.2 s
    eng_a, eng_b = CountingEngine(engine), CountingEngine(engine)
    async with (
        run_server(make_settings(tmp_path / "a", **fast), eng_a) as a,
        run_server(make_settings(tmp_path / "b", **fast), eng_b) as b,
    ):
        clin = await b.events(sid, s["clinician_token"])
        await asyncio.sleep(max(0.0, dead_until - time.time() - 0.3))
        assert eng_a.calls == eng_b.calls == 0  # nobody touches it while the dead claim is live
        await asyncio.sleep(2.6)  # claim expired; the winner retries (backend down) and renews its claim
        holders = [e for e in (eng_a, eng_b) if e.calls]
        assert len(holders) == 1, (eng_a.calls, eng_b.calls)
        winner = a if holders[0] is eng_a else b
        row = await store.get_session(sid)
        assert row is not None and row["state"] == "pending"
        assert row["claimed_by"] == winner.app.state.server.pending.owner
        flaky.failures = 0  # the backend is back
        result = (await clin.wait("assessment.result", timeout=30))[0]["assessment"]
        await clin.wait("session.closed", timeout=10)
        await asyncio.sleep(1.0)  # more scans: nobody assesses it again
        assert eng_a.made + eng_b.made == 1 and parker.made == 0  # one assessment made in all
        assert result["session_id"] == sid and result["kind"] == "final"
        assert result["model"]["transcript_source"] == "captions"  # from the stored snapshot
        await clin.close()
    finals = await store.assessments(sid, "final")
    assert [f.model_dump(mode="json") for f in finals] == [result]
    events = [e["type"] for e in await store.events(sid)]
    assert events.count("assessment.result") == 1 and events.count("session.closed") == 1
    row = await store.get_session(sid)
    assert row is not None and row["state"] == "closed" and row["claimed_by"] is None
    assert await store.pending_snapshot(sid) is None
    await store.close()
    print(f"\n[scale] pending: P {parker.calls} tries, A {eng_a.calls}, B {eng_b.calls}")
