"""Store and event bus on SQLite (file, WAL) and on a real Postgres cluster (same schema, same calls)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mllmdr_core.errors import StorageError
from stream_server.bus import InProcessEventBus
from stream_server.metrics import ServerMetrics
from stream_server.protocol import IndicatorsEvent, TranscriptLineModel, _example_assessment
from stream_server.store import Store

from .conftest import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("postgresql server binaries not installed (scripts/setup.sh)")
    root = Path(tempfile.mkdtemp(prefix="mllmdr-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    run = _as_postgres_user()
    subprocess.run(
        [*run, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "mllmdr"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",  # the postmaster must not inherit our pipes, or pg_ctl never returns
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    try:
        yield f"postgresql+asyncpg://mllmdr@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _ind(t: float) -> IndicatorsEvent:
    return IndicatorsEvent(session_id="s_a", media_time_s=t, window_s=5.0, values={})


async def _round_trip(url: str) -> None:
    store = Store(url)
    await store.init()
    await store.init()  # idempotent
    try:
        await store.create_session("s_a", "bundle-x", {"external_id": "call-1"})
        await store.create_session("s_b", "bundle-x", {})
        row = await store.get_session("s_a")
        assert row is not None and row["state"] == "created" and row["meta"] == {"external_id": "call-1"}
        assert await store.get_session("s_zz") is None
        await store.update_meta("s_a", audio_processing={"patient": {"source": "browser"}})
        row = await store.get_session("s_a")
        assert row is not None and row["meta"] == {
            "external_id": "call-1",
            "audio_processing": {"patient": {"source": "browser"}},
        }
        line = TranscriptLineModel(start_s=1.0, end_s=2.0, speaker="patient", text="naïve ✓ <b>")
        assert await store.add_transcript("s_a", line) == 0
        assert await store.add_transcript("s_a", line) == 1
        assert await store.add_transcript("s_b", line) == 0
        assert [t.text for t in await store.transcript("s_a")] == ["naïve ✓ <b>"] * 2
        await store.add_indicators("s_a", 2.0, 100.0, {"speech_ratio": 0.5})
        stored = await store.indicators("s_a")
        assert stored == [{"media_time_s": 2.0, "ts": 100.0, "values": {"speech_ratio": 0.5}}]
        assessment = _example_assessment("s_a", "final")
        await store.add_assessment(assessment)
        assert await store.assessments("s_a", "final") == [assessment]
        assert await store.assessments("s_b") == []
        bus = InProcessEventBus(store, ServerMetrics(), queue_size=3)
        sub = bus.subscribe("s_a")
        first = await bus.publish(_ind(1.0))
        second = await bus.publish(_ind(2.0))
        assert (first.seq, second.seq) == (1, 2)
        assert await sub.get() == first
        assert [e["seq"] for e in await store.events("s_a")] == [1, 2]
        assert [e["seq"] for e in await store.events("s_a", after_seq=1)] == [2]
        # a fresh bus (a restarted server) continues the numbering from the store
        bus2 = InProcessEventBus(store, ServerMetrics())
        third = await bus2.publish(_ind(3.0))
        assert third.seq == 3
        fourth = await bus.publish(_ind(4.0))
        assert fourth.seq == 4  # the old bus hit seq 3 in the store and renumbered
        # a subscriber that stops reading overflows and is told so; it never blocks publishing
        for i in range(10):
            await bus.publish(_ind(10.0 + i))
        drained = [await sub.get() for _ in range(sub.queue.qsize())]
        assert sub.overflowed and drained[-1] is None
        await store.set_state("s_a", "closed", ended=True)
        row = await store.get_session("s_a")
        assert row is not None and row["state"] == "closed" and row["ended_at"] is not None
        assert await store.open_sessions() == ["s_b"]
        with pytest.raises(StorageError):
            await store.add_event("s_a", 1, "indicators", 0.0, "{}")  # duplicate seq
        assert await store.ping()
    finally:
        await store.close()


async def test_sqlite_store_round_trip_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sub/dir/store.db"
    await _round_trip(url)
    store = Store(url)
    async with store._engine.connect() as conn:
        mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
    await store.close()
    assert mode == "wal"


@pytest.mark.postgres
async def test_postgres_store_round_trip(postgres_url: str) -> None:
    await _round_trip(postgres_url)


async def test_unwritable_database_is_a_storage_error(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/ro.db")
    await store.init()
    await store.create_session("s_a", "b", {})
    await store.close()
    (tmp_path / "ro.db").chmod(0o444)
    ro = Store(f"sqlite+aiosqlite:///file:{tmp_path}/ro.db?mode=ro&uri=true")
    try:
        with pytest.raises(StorageError) as info:
            await ro.add_indicators("s_a", 1.0, 1.0, {})
        assert info.value.code == "storage_error"
    finally:
        await ro.close()
    await asyncio.sleep(0)
