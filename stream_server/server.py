"""What the routes share (``app.state.server``): store, bus, sessions, tokens, limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from stream_server.audio_processing import from_meta
from stream_server.auth import Claims, TokenIssuer
from stream_server.engine import Engine
from stream_server.fanout import make_event_bus
from stream_server.manager import SessionManager
from stream_server.metrics import ServerMetrics
from stream_server.pending import PendingAssessments
from stream_server.protocol import Role, SessionInfo, protocol_error
from stream_server.ratelimit import Buckets
from stream_server.services import Services
from stream_server.settings import Settings
from stream_server.store import Store


def bearer_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


class Server:
    """Everything the routes need, built by ``create_app`` and started in its lifespan."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        assert settings.jwt_secret and settings.api_key
        self.settings = settings
        self.metrics = ServerMetrics()
        self.store = Store(settings.database_url)
        # Postgres: LISTEN/NOTIFY fan-out across instances (stream_server/fanout.py); SQLite: in-process.
        self.bus = make_event_bus(settings.database_url, self.store, self.metrics, settings.ws_queue_events)
        self.services = Services(settings, engine, self.store, self.bus, self.metrics)
        self.pending = PendingAssessments(self.services)  # final assessments waiting for the LLM backend
        self.manager = SessionManager(self.services, self.pending)
        self.issuer = TokenIssuer(settings.jwt_secret, settings.api_key)
        per_min = settings.session_create_per_min
        self.create_limit = Buckets("sessions created", per_min, per_min / 60.0)  # per API key
        self.checkpoint_limit = Buckets(
            "checkpoint requests", settings.checkpoint_burst, settings.checkpoint_per_min / 60.0
        )  # per session
        # per session
        self.caption_limit = Buckets("captions", settings.caption_burst, settings.caption_per_s)
        self.ready = False

    def auth(
        self, conn: HTTPConnection, session_id: str, roles: tuple[Role, ...], *, api_key_ok: bool
    ) -> Claims | None:
        """None when the bearer is the API key (and allowed); else the token's claims."""
        bearer = bearer_of(conn)
        if api_key_ok and self.issuer.is_api_key(bearer):
            return None
        return self.issuer.verify(bearer, session_id, roles)

    async def info(self, session_id: str) -> SessionInfo:
        row = await self.store.get_session(session_id)
        if row is None:
            raise protocol_error("not_found", f"unknown session {session_id}")
        live = self.manager.get(session_id)
        finals = await self.store.assessments(session_id, "final")
        checkpoints = await self.store.assessments(session_id, "checkpoint")
        engine_info = self.services.engine.info
        return SessionInfo(
            session_id=session_id,
            state=row["state"],
            created_at=row["created_at"],
            ended_at=row["ended_at"],
            bundle_id=row["bundle_id"],
            non_clinical=engine_info.non_clinical,
            labels=list(engine_info.labels),
            publisher_connected=bool(live and live.publisher_connected),
            media_time_s=live.media_time_s if live else 0.0,
            transcript_lines=len(await self.store.transcript(session_id)),
            checkpoints=len(checkpoints),
            final_assessment=finals[-1] if finals else None,
            last_seq=await self.store.max_seq(session_id),
            audio_processing={str(role): v for role, v in from_meta(row["meta"]).items()},
        )


def server_of(conn: HTTPConnection) -> Server:
    srv: Server = conn.app.state.server
    return srv


ServerDep = Annotated[Server, Depends(server_of)]
