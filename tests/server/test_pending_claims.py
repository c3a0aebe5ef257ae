"""Claims on pending final assessments in a real SQLite store (the same statements run on Postgres:
``tests/scale/test_pending_instances.py``), the snapshot kept in the store, and the additive migration."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.frames import TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.pending import load_snapshot, save_snapshot
from stream_server.protocol import _example_assessment
from stream_server.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path}/claims.sqlite")
    await s.init()
    yield s
    await s.close()


async def _pending(store: Store, session_id: str, owner: str = "A", ttl: float = 60.0) -> None:
    await store.create_session(session_id, "bundle-1", {"external_id": "call-1"})
    info = {"snapshot": f"/nowhere/{session_id}.npz", "reason": "ended"}
    await store.park_pending(session_id, b"npz-bytes", info, owner=owner, claim_ttl_s=ttl)


async def test_park_keeps_snapshot_and_claims_for_the_parking_instance(store: Store) -> None:
    await _pending(store, "s1", owner="A")
    row = await store.get_session("s1")
    assert row is not None and row["state"] == "pending" and row["claimed_by"] == "A"
    assert row["meta"] == {
        "external_id": "call-1",
        "pending": {"snapshot": "/nowhere/s1.npz", "reason": "ended"},
    }
    assert await store.pending_snapshot("s1") == b"npz-bytes"
    assert await store.claimable_pending() == []  # A's claim is live
    assert not await store.claim_pending("s1", "B", 60.0)
    assert await store.claim_pending("s1", "A", 60.0)  # renewal by the holder


async def test_expired_claim_is_taken_over_and_the_old_holder_cannot_finish(store: Store) -> None:
    await _pending(store, "s1", owner="A", ttl=5.0)
    now = (await store.get_session("s1") or {})["claimed_until"]
    assert await store.claimable_pending(now=now + 0.1) == ["s1"]
    assert await store.claim_pending("s1", "B", 5.0, now=now + 0.1)  # A died: its claim expired
    assert not await store.claim_pending("s1", "A", 5.0, now=now + 0.2)  # and A cannot take it back
    final = _example_assessment("s1", "final")
    assert not await store.finish_pending("s1", "A", final)  # a late A writes nothing
    assert await store.assessments("s1") == []
    assert await store.finish_pending("s1", "B", final)
    assert not await store.finish_pending("s1", "B", final)  # exactly once, even for the holder
    row = await store.get_session("s1")
    assert row is not None and row["state"] == "closed" and row["claimed_by"] is None
    assert row["ended_at"] is not None and row["meta"] == {"external_id": "call-1"}
    assert [a.kind for a in await store.assessments("s1")] == ["final"]
    assert await store.pending_snapshot("s1") is None
    assert not await store.claim_pending("s1", "C", 5.0)  # closed sessions are never claimable


async def test_release_frees_the_claim_at_once(store: Store) -> None:
    await _pending(store, "s1", owner="A")
    await store.release_claim("s1", "B")  # not B's to release
    assert await store.claimable_pending() == []
    await store.release_claim("s1", "A")
    assert await store.claimable_pending() == ["s1"]


def test_snapshot_round_trips_through_bytes_and_file(tmp_path: Path) -> None:
    snap = SessionSnapshot(
        audio=np.arange(12, dtype=np.float32).reshape(3, 4),  # (Ta, D_audio)
        visual=np.ones((2, 5), dtype=np.float32),  # (Tv, D_visual)
        transcript=(TranscriptLine(start_s=0.0, end_s=1.0, speaker="patient", text="tired"),),
        indicators={"speech_ratio": 0.4},
        window=(0.0, 6.5),
    )
    data = snap.to_bytes()
    for back in (load_snapshot(data), load_snapshot(save_snapshot(tmp_path / "s.npz", data))):
        assert np.array_equal(back.audio, snap.audio) and np.array_equal(back.visual, snap.visual)
        assert back.transcript == snap.transcript and back.indicators == snap.indicators
        assert back.window == snap.window


async def test_database_of_an_older_version_gains_the_claim_columns(tmp_path: Path) -> None:
    """A database created before claims existed (no claim columns, no snapshot table) is migrated by
    ``init`` and keeps its rows."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE sessions (id VARCHAR(64) PRIMARY KEY, created_at FLOAT NOT NULL, ended_at FLOAT, "
            "state VARCHAR(16) NOT NULL, bundle_id VARCHAR(200) NOT NULL, meta TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO sessions VALUES ('old', 1.0, NULL, 'pending', 'b', '{}')")
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.init()
    row = await store.get_session("old")
    assert row is not None and row["state"] == "pending" and row["claimed_by"] is None
    assert await store.claimable_pending() == ["old"]
    assert await store.claim_pending("old", "A", 30.0)
    assert await store.pending_snapshot("old") is None  # the new table exists, empty
    await store.init()  # idempotent
    await store.close()
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(sessions)")]
    assert columns[-2:] == ["claimed_by", "claimed_until"]
