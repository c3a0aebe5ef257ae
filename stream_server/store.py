"""Durable storage: async SQLAlchemy Core over SQLite (WAL, default) or Postgres (``DATABASE_URL``).

Every write commits before the caller acknowledges it, so an acknowledged caption, indicator row,
checkpoint or event survives ``kill -9`` of the server (SQLite WAL is durable across process crashes).
Tables: sessions, transcript, indicators, assessments, events (the ordered event log replayed to late
joiners), pending_snapshots (features of sessions whose final assessment waits for the LLM backend).
JSON columns hold pydantic dumps; the schema uses only types both backends share.

Migrations: ``init`` creates missing tables and adds missing nullable columns to existing ones
(``ALTER TABLE … ADD COLUMN``, same statement on SQLite and Postgres), so a database made by an older
version gains e.g. ``sessions.claimed_by``/``claimed_until``. Schema changes must stay additive and
nullable (or defaulted) for this to hold.

Pending claims: ``claim_pending`` is one conditional ``UPDATE`` (state ``pending`` and the claim free,
expired or already ours), atomic on both backends; ``finish_pending`` stores the final assessment and
closes the session in one transaction only while the caller still holds the claim. So with several
instances exactly one stores the final assessment, and a claim left by a dead instance expires.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import StorageError
from stream_server.protocol import TranscriptLineModel
from stream_server.settings import database_backend

metadata = sa.MetaData()

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("bundle_id", sa.String(200), nullable=False),
    sa.Column("meta", sa.Text, nullable=False, default="{}"),
    # pending final assessment: which instance retries it, and until when its claim holds (Unix s)
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", sa.Float, nullable=True),
)
transcript = sa.Table(
    "transcript",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), nullable=False, index=True),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("end_s", sa.Float, nullable=False),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("session_id", "idx"),
)
indicators = sa.Table(
    "indicators",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), nullable=False, index=True),
    sa.Column("media_time_s", sa.Float, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("values", sa.Text, nullable=False),
)
assessments = sa.Table(
    "assessments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
pending_snapshots = sa.Table(
    "pending_snapshots",
    metadata,
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # stream_server.pending.snapshot_bytes (.npz)
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite+aiosqlite:///path`` URL (None for Postgres or in-memory)."""
    prefix = "sqlite+aiosqlite:///"
    if database_backend(url) != "sqlite":
        return None
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        return Path(url[len(prefix) :])
    return None


class Store:
    """All persistence of the server; every method commits before it returns."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = database_backend(url)
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._engine: AsyncEngine = create_async_engine(url)
        if self.backend == "sqlite":
            sa_event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)

    async def init(self) -> None:
        try:
            async with self._engine.begin() as conn:
                if self.backend == "postgresql":
                    # Several instances start at once: serialise schema creation (lock ends with the tx).
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(726351)"))
                await conn.run_sync(metadata.create_all)
                await conn.run_sync(_add_missing_columns)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open database {self._safe_url}: {exc}") from exc

    @property
    def _safe_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    async def _write(self, *statements: Any) -> list[Any]:
        try:
            async with self._engine.begin() as conn:
                return [await conn.execute(s) for s in statements]
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    async def _read(self, statement: Any) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                return list((await conn.execute(statement)).mappings())
        except SQLAlchemyError as exc:
            raise StorageError(f"database read failed: {type(exc).__name__}: {exc}") from exc

    # ---- sessions
    async def create_session(self, session_id: str, bundle_id: str, meta: dict[str, Any]) -> None:
        await self._write(
            sessions.insert().values(
                id=session_id,
                created_at=time.time(),
                state="created",
                bundle_id=bundle_id,
                meta=json.dumps(meta),
            )
        )

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        rows = await self._read(sa.select(sessions).where(sessions.c.id == session_id))
        if not rows:
            return None
        row = dict(rows[0])
        row["meta"] = json.loads(row["meta"])
        return row

    async def update_meta(self, session_id: str, **values: Any) -> None:
        """Set top-level keys of a session's ``meta`` (one transaction; other keys kept)."""
        try:
            async with self._engine.begin() as conn:
                meta = await self._meta_for_update(conn, session_id)
                meta.update(values)
                await conn.execute(
                    sessions.update().where(sessions.c.id == session_id).values(meta=json.dumps(meta))
                )
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    async def set_state(self, session_id: str, state: str, *, ended: bool = False) -> None:
        values: dict[str, Any] = {"state": state}
        if ended:
            values["ended_at"] = time.time()
        await self._write(sessions.update().where(sessions.c.id == session_id).values(**values))

    # ---- pending final assessments (claims shared by every instance on this database)
    async def park_pending(
        self, session_id: str, snapshot: bytes, info: dict[str, Any], *, owner: str, claim_ttl_s: float
    ) -> None:
        """One transaction: keep ``snapshot``, set ``meta.pending``, state pending, claimed by ``owner``."""
        now = time.time()
        try:
            async with self._engine.begin() as conn:
                meta = await self._meta_for_update(conn, session_id)
                meta["pending"] = info
                await conn.execute(
                    pending_snapshots.delete().where(pending_snapshots.c.session_id == session_id)
                )
                await conn.execute(
                    pending_snapshots.insert().values(session_id=session_id, created_at=now, body=snapshot)
                )
                await conn.execute(
                    sessions.update()
                    .where(sessions.c.id == session_id)
                    .values(
                        state="pending",
                        meta=json.dumps(meta),
                        claimed_by=owner,
                        claimed_until=now + claim_ttl_s,
                    )
                )
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    async def claim_pending(
        self, session_id: str, owner: str, ttl_s: float, *, now: float | None = None
    ) -> bool:
        """Take (or renew) the claim on a pending session; False when another live claim holds it."""
        now = time.time() if now is None else now
        free = sa.or_(
            sessions.c.claimed_by.is_(None), sessions.c.claimed_until < now, sessions.c.claimed_by == owner
        )
        [result] = await self._write(
            sessions.update()
            .where(sessions.c.id == session_id, sessions.c.state == "pending", free)
            .values(claimed_by=owner, claimed_until=now + ttl_s)
        )
        return bool(result.rowcount == 1)

    async def release_claim(self, session_id: str, owner: str) -> None:
        await self._write(
            sessions.update()
            .where(sessions.c.id == session_id, sessions.c.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )

    async def claimable_pending(self, *, now: float | None = None) -> list[str]:
        """Pending sessions whose claim is free or expired."""
        now = time.time() if now is None else now
        rows = await self._read(
            sa.select(sessions.c.id)
            .where(
                sessions.c.state == "pending",
                sa.or_(sessions.c.claimed_by.is_(None), sessions.c.claimed_until < now),
            )
            .order_by(sessions.c.created_at)
        )
        return [r["id"] for r in rows]

    async def pending_snapshot(self, session_id: str) -> bytes | None:
        rows = await self._read(
            sa.select(pending_snapshots.c.body).where(pending_snapshots.c.session_id == session_id)
        )
        return bytes(rows[0]["body"]) if rows else None

    async def finish_pending(self, session_id: str, owner: str, assessment: Assessment) -> bool:
        """While ``owner`` holds the claim: store the final assessment, close the session, drop the
        snapshot, in one transaction. False (nothing written) when the claim was lost."""
        try:
            async with self._engine.begin() as conn:
                meta = await self._meta_for_update(conn, session_id)
                meta.pop("pending", None)
                closed = await conn.execute(
                    sessions.update()
                    .where(
                        sessions.c.id == session_id,
                        sessions.c.state == "pending",
                        sessions.c.claimed_by == owner,
                    )
                    .values(
                        state="closed",
                        ended_at=time.time(),
                        meta=json.dumps(meta),
                        claimed_by=None,
                        claimed_until=None,
                    )
                )
                if closed.rowcount != 1:
                    return False
                await conn.execute(self._assessment_insert(assessment))
                await conn.execute(
                    pending_snapshots.delete().where(pending_snapshots.c.session_id == session_id)
                )
                return True
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    async def _meta_for_update(self, conn: Any, session_id: str) -> dict[str, Any]:
        stmt = sa.select(sessions.c.meta).where(sessions.c.id == session_id)
        if self.backend == "postgresql":
            stmt = stmt.with_for_update()  # the row stays ours until commit (SQLite: one writer anyway)
        raw = (await conn.execute(stmt)).scalar_one_or_none()
        meta: dict[str, Any] = json.loads(raw or "{}")
        return meta

    async def open_sessions(self) -> list[str]:
        rows = await self._read(sa.select(sessions.c.id).where(sessions.c.state != "closed"))
        return [r["id"] for r in rows]

    # ---- data
    async def add_transcript(self, session_id: str, line: TranscriptLineModel) -> int:
        """Store one line; returns its 0-based index in the session transcript (caller serialises)."""
        try:
            async with self._engine.begin() as conn:
                count = (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(transcript)
                        .where(transcript.c.session_id == session_id)
                    )
                ).scalar_one()
                await conn.execute(
                    transcript.insert().values(
                        session_id=session_id, idx=count, created_at=time.time(), **line.model_dump()
                    )
                )
                return int(count)
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {type(exc).__name__}: {exc}") from exc

    async def add_indicators(
        self, session_id: str, media_time_s: float, ts: float, values: dict[str, float]
    ) -> None:
        await self._write(
            indicators.insert().values(
                session_id=session_id, media_time_s=media_time_s, ts=ts, values=json.dumps(values)
            )
        )

    async def add_assessment(self, assessment: Assessment) -> None:
        await self._write(self._assessment_insert(assessment))

    @staticmethod
    def _assessment_insert(assessment: Assessment) -> Any:
        return assessments.insert().values(
            session_id=assessment.session_id,
            kind=assessment.kind,
            created_at=assessment.created_at,
            body=assessment.model_dump_json(),
        )

    async def add_event(self, session_id: str, seq: int, kind: str, ts: float, body: str) -> None:
        await self._write(events.insert().values(session_id=session_id, seq=seq, type=kind, ts=ts, body=body))

    # ---- reads
    async def max_seq(self, session_id: str) -> int:
        rows = await self._read(
            sa.select(sa.func.max(events.c.seq).label("m")).where(events.c.session_id == session_id)
        )
        return int(rows[0]["m"] or 0) if rows else 0

    async def events(self, session_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        rows = await self._read(
            sa.select(events.c.body)
            .where(events.c.session_id == session_id, events.c.seq > after_seq)
            .order_by(events.c.seq)
        )
        return [json.loads(r["body"]) for r in rows]

    async def transcript(self, session_id: str) -> list[TranscriptLineModel]:
        rows = await self._read(
            sa.select(transcript).where(transcript.c.session_id == session_id).order_by(transcript.c.idx)
        )
        fields = TranscriptLineModel.model_fields
        return [TranscriptLineModel(**{k: r[k] for k in fields}) for r in rows]

    async def indicators(self, session_id: str) -> list[dict[str, Any]]:
        rows = await self._read(
            sa.select(indicators).where(indicators.c.session_id == session_id).order_by(indicators.c.id)
        )
        return [
            {"media_time_s": r["media_time_s"], "ts": r["ts"], "values": json.loads(r["values"])}
            for r in rows
        ]

    async def assessments(self, session_id: str, kind: str | None = None) -> list[Assessment]:
        stmt = sa.select(assessments.c.body).where(assessments.c.session_id == session_id)
        if kind:
            stmt = stmt.where(assessments.c.kind == kind)
        rows = await self._read(stmt.order_by(assessments.c.id))
        return [Assessment.model_validate_json(r["body"]) for r in rows]


def _add_missing_columns(conn: sa.Connection) -> None:
    """Additive migration: nullable columns of ``metadata`` that an existing table lacks are added."""
    inspector = sa.inspect(conn)
    quote = conn.dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise StorageError(f"cannot migrate {table.name}: new column {column.name} must be nullable")
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
