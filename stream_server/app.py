"""The ASGI app (FastAPI): session REST routes, SDP offer/answer, the events WebSocket, health, metrics.

Read it like aiortc's ``examples/server/server.py``: routes here; the peer connection, tracks and
workers live in ``session.py`` / ``ingest.py``; storage in ``store.py``; fan-out in ``bus.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from mllmdr_core.errors import AuthError, MllmdrError
from stream_server.auth import Claims, TokenIssuer
from stream_server.bus import Subscription
from stream_server.engine import Engine
from stream_server.fanout import make_event_bus, start_bus, stop_bus
from stream_server.http_security import HttpSecurity, http_security_options
from stream_server.ice import credentials_expire_at, ice_servers_for
from stream_server.json_limits import json_too_deep, quiet_invalid_utf8_logs
from stream_server.metrics import ServerMetrics
from stream_server.protocol import (
    MAX_HTTP_BODY_BYTES,
    PUBLISHER_ONLY_TYPES,
    Answer,
    CaptionIn,
    CaptionMessage,
    CheckpointAccepted,
    CheckpointRequestMessage,
    ErrorEvent,
    HTTPErrorBody,
    IceServersResponse,
    IndicatorPoint,
    Offer,
    PingMessage,
    PongEvent,
    Role,
    SessionCreated,
    SessionCreateRequest,
    SessionEndMessage,
    SessionEndResponse,
    SessionExport,
    SessionInfo,
    SessionStateName,
    TokenRequest,
    TokenResponse,
    TranscriptAckEvent,
    TranscriptLineModel,
    error_code_of,
    message_ref,
    parse_client_message,
    protocol_error,
)
from stream_server.session import LiveSession, Services, SessionManager
from stream_server.settings import Settings
from stream_server.store import Store

log = logging.getLogger("stream_server")
PANEL_DIR = Path(__file__).parent / "panel"
SDK_DIR = Path(__file__).resolve().parent.parent / "client_sdk" / "js"

STATUS_OF_CODE = {
    "auth_failed": 401,
    "token_expired": 401,
    "forbidden": 403,
    "not_found": 404,
    "session_closed": 409,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "bad_json": 400,
    "unknown_type": 400,
    "invalid_message": 400,
    "bad_sdp": 400,
    "protocol_error": 400,
    "media_invalid": 400,
    "storage_error": 503,
    "backend_unavailable": 503,
}
WS_SEND_TIMEOUT_S = 10.0  # a subscriber that does not take an event for this long is disconnected
WS_CLOSE_OF_CODE = {"auth_failed": 4401, "token_expired": 4401, "forbidden": 4403, "not_found": 4404}


def limit_ice_host_addresses(addresses: list[str]) -> None:
    """Make aioice gather host candidates only on ``addresses`` (loopback-only hosts, tests)."""
    import aioice.ice

    fixed = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(fixed)


def _error_response(code: str, message: str) -> JSONResponse:
    body = HTTPErrorBody(error=HTTPErrorBody.Detail(code=code, message=message))  # type: ignore[arg-type]
    return JSONResponse(body.model_dump(), status_code=STATUS_OF_CODE.get(code, 500))


class BodyLimitMiddleware:
    """Rejects HTTP bodies over ``limit`` bytes with 413 / ``too_large`` before the app reads them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error_response("too_large", f"body over {self.limit} bytes")(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _error_response("too_large", f"body over {self.limit} bytes")(scope, receive, send)
                return
        if (too_deep := json_too_deep(body)) is not None:  # stream_server/json_limits.py
            await _error_response("invalid_message", too_deep)(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()

    def check(self) -> None:
        now = time.monotonic()
        while self._times and now - self._times[0] > 60.0:
            self._times.popleft()
        if len(self._times) >= self.per_minute:
            raise protocol_error("rate_limited", f"more than {self.per_minute} sessions created per minute")
        self._times.append(now)


class Server:
    """Everything the routes need, built in the app's lifespan."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        assert settings.jwt_secret and settings.api_key
        self.settings = settings
        self.metrics = ServerMetrics()
        self.store = Store(settings.database_url)
        # Postgres: LISTEN/NOTIFY fan-out across instances (stream_server/fanout.py); SQLite: in-process.
        self.bus = make_event_bus(settings.database_url, self.store, self.metrics, settings.ws_queue_events)
        self.services = Services(settings, engine, self.store, self.bus, self.metrics)
        self.manager = SessionManager(self.services)
        self.issuer = TokenIssuer(settings.jwt_secret, settings.api_key)
        self.limiter = RateLimiter(settings.session_create_per_min)
        self.ready = False

    def auth(
        self, request: Request, session_id: str, roles: tuple[Role, ...], *, api_key_ok: bool
    ) -> Claims | None:
        """None when the bearer is the API key (and allowed); else the token's claims."""
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
        if api_key_ok and self.issuer.is_api_key(bearer):
            return None
        return self.issuer.verify(bearer, session_id, roles)

    async def info(self, session_id: str) -> SessionInfo:
        row = await self.store.get_session(session_id)
        if row is None:
            raise protocol_error("not_found", f"unknown session {session_id}")
        live = self.manager.sessions.get(session_id)
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
            publisher_connected=bool(live and live.pc is not None and live.status == "live"),
            media_time_s=live.media_time_s if live else 0.0,
            transcript_lines=len(await self.store.transcript(session_id)),
            checkpoints=len(checkpoints),
            final_assessment=finals[-1] if finals else None,
            last_seq=await self.store.max_seq(session_id),
        )


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """The ASGI app for ``settings`` serving the already-loaded ``engine``."""
    settings = settings.ensure_secrets()
    if settings.ice_host_addresses:
        limit_ice_host_addresses(settings.ice_host_addresses)
    srv = Server(settings, engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await srv.store.init()
        await start_bus(srv.bus)
        await srv.services.pending.resume_all()  # final assessments the LLM backend owed before a restart
        srv.ready = True
        try:
            yield
        finally:
            srv.ready = False
            await srv.manager.close()
            await srv.services.pending.close()
            srv.services.close()
            await stop_bus(srv.bus)
            await srv.store.close()

    app = FastAPI(title="mllmdr-server", version="1", lifespan=lifespan)
    app.state.server = srv
    app.add_middleware(BodyLimitMiddleware, limit=MAX_HTTP_BODY_BYTES)
    app.add_middleware(HttpSecurity, **http_security_options(settings))  # outermost: headers, Origin, 431
    quiet_invalid_utf8_logs()  # uvicorn's traceback per non-UTF-8 WebSocket frame → one line

    @app.exception_handler(MllmdrError)
    async def on_mllmdr_error(_request: Request, exc: MllmdrError) -> JSONResponse:
        code = error_code_of(exc)
        srv.metrics.ws_errors.inc(1.0, code)
        return _error_response(code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        srv.metrics.ws_errors.inc(1.0, "invalid_message")
        return _error_response("invalid_message", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_message", 404: "not_found", 405: "invalid_message", 413: "too_large"}.get(
            exc.status_code, "internal"
        )  # 400: a body FastAPI could not parse
        response = _error_response(code, str(exc.detail))
        response.status_code = exc.status_code
        return response

    # ---------------------------------------------------------------- sessions
    @app.post("/v1/sessions", status_code=201)
    async def create_session(request: Request, body: SessionCreateRequest | None = None) -> SessionCreated:
        srv.issuer.check_api_key(_bearer(request))
        srv.limiter.check()
        body = body or SessionCreateRequest()
        session = await srv.manager.create(
            external_id=body.external_id, checkpoint_interval_s=body.checkpoint_interval_s
        )
        ttl = body.ttl_s or settings.token_ttl_s
        pub, exp = srv.issuer.mint(session.id, "publisher", ttl)
        cli, _ = srv.issuer.mint(session.id, "clinician", ttl)
        base = settings.base_url
        return SessionCreated(
            session_id=session.id,
            publisher_token=pub,
            clinician_token=cli,
            expires_at=exp,
            patient_url=f"{base}/patient/?session={session.id}#token={pub}",
            panel_url=f"{base}/panel/?session={session.id}#token={cli}",
            ice_servers=ice_servers_for(settings, session.id),
        )

    @app.post("/v1/sessions/{session_id}/tokens")
    async def mint_token(session_id: str, request: Request, body: TokenRequest) -> TokenResponse:
        srv.issuer.check_api_key(_bearer(request))
        if await srv.store.get_session(session_id) is None:
            raise protocol_error("not_found", f"unknown session {session_id}")
        token, exp = srv.issuer.mint(session_id, body.role, body.ttl_s)
        return TokenResponse(token=token, expires_at=exp)

    @app.get("/v1/sessions/{session_id}/ice-servers")
    async def ice_servers(session_id: str, request: Request) -> IceServersResponse:
        """STUN/TURN servers for the publisher's peer connection, with fresh TURN credentials."""
        srv.auth(request, session_id, ("publisher",), api_key_ok=True)
        if await srv.store.get_session(session_id) is None:
            raise protocol_error("not_found", f"unknown session {session_id}")
        now = time.time()
        return IceServersResponse(
            ice_servers=ice_servers_for(settings, session_id, now=now),
            expires_at=credentials_expire_at(settings, now=now),
        )

    @app.post("/v1/sessions/{session_id}/offer")
    async def offer(session_id: str, request: Request, body: Offer) -> Answer:
        srv.auth(request, session_id, ("publisher",), api_key_ok=False)
        session = await srv.manager.get_live(session_id)
        t0 = time.perf_counter()
        answer = await session.accept_offer(body)
        srv.metrics.stage_seconds.observe(time.perf_counter() - t0, "offer")
        return answer

    @app.post("/v1/sessions/{session_id}/captions")
    async def caption(session_id: str, request: Request, body: CaptionIn) -> TranscriptAckEvent:
        srv.auth(request, session_id, ("publisher",), api_key_ok=False)
        session = await srv.manager.get_live(session_id)
        line = TranscriptLineModel(
            start_s=body.start_s, end_s=body.end_s, speaker=body.speaker, text=body.text, final=body.final
        )
        return await session.add_caption(line, ref=body.id)

    @app.post("/v1/sessions/{session_id}/checkpoint")
    async def checkpoint(session_id: str, request: Request, wait: bool = False) -> CheckpointAccepted:
        srv.auth(request, session_id, ("publisher", "clinician"), api_key_ok=True)
        session = await srv.manager.get_live(session_id)
        request_id = "k_" + str(int(time.time() * 1000))
        if wait:
            result = await session.checkpoint(ref=request_id)
            return CheckpointAccepted(request_id=request_id, assessment=result)
        session._spawn(_quiet(session.checkpoint(ref=request_id)))
        return CheckpointAccepted(request_id=request_id)

    @app.post("/v1/sessions/{session_id}/end")
    async def end(session_id: str, request: Request) -> SessionEndResponse:
        srv.auth(request, session_id, ("publisher",), api_key_ok=True)
        live = srv.manager.sessions.get(session_id)
        if live is None or live.closed.is_set():
            try:
                live = await srv.manager.get_live(session_id)
            except MllmdrError as exc:
                if getattr(exc, "code", "") != "session_closed":
                    raise
                info = await srv.info(session_id)
                return SessionEndResponse(
                    session_id=session_id, state=info.state, assessment=info.final_assessment
                )
        session: LiveSession = live
        task = asyncio.ensure_future(session.end("ended"))
        session._background.add(task)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), settings.end_timeout_s)
        except TimeoutError:
            return SessionEndResponse(session_id=session_id, state="ending")
        state: SessionStateName = "pending" if session.status == "pending" else "closed"  # pending: retried
        return SessionEndResponse(session_id=session_id, state=state, assessment=result)

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> SessionInfo:
        srv.auth(request, session_id, ("publisher", "clinician"), api_key_ok=True)
        return await srv.info(session_id)

    @app.get("/v1/sessions/{session_id}/export")
    async def export(session_id: str, request: Request) -> SessionExport:
        srv.auth(request, session_id, ("clinician",), api_key_ok=True)
        info = await srv.info(session_id)
        return SessionExport(
            info=info,
            transcript=await srv.store.transcript(session_id),
            indicators=[IndicatorPoint(**p) for p in await srv.store.indicators(session_id)],
            checkpoints=await srv.store.assessments(session_id, "checkpoint"),
            assessment=info.final_assessment,
            events=await srv.store.events(session_id),
        )

    # ---------------------------------------------------------------- events WebSocket
    @app.websocket("/v1/sessions/{session_id}/events")
    async def events(ws: WebSocket, session_id: str, token: str | None = None, after_seq: int = 0) -> None:
        await ws.accept()
        try:
            claims = srv.issuer.verify(token, session_id, ("publisher", "clinician"))
            if await srv.store.get_session(session_id) is None:
                raise protocol_error("not_found", f"unknown session {session_id}")
        except MllmdrError as exc:
            code = error_code_of(exc)
            srv.metrics.ws_errors.inc(1.0, code)
            await ws.send_text(
                ErrorEvent(
                    session_id=session_id,
                    code=code,  # type: ignore[arg-type]
                    message=str(exc),
                    fatal=True,
                ).model_dump_json()
            )
            await ws.close(code=WS_CLOSE_OF_CODE.get(code, 1008), reason=code)
            return
        await _serve_events(srv, ws, session_id, claims, after_seq)

    # ---------------------------------------------------------------- ops
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = srv.ready and await srv.store.ping()
        return JSONResponse({"ready": ok, "bundle_id": engine.info.bundle_id}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(srv.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def root() -> Response:
        return RedirectResponse("/panel/")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return FileResponse(PANEL_DIR / "common" / "favicon.svg", media_type="image/svg+xml")

    app.mount("/panel", StaticFiles(directory=PANEL_DIR / "clinician", html=True), name="panel")
    app.mount("/patient", StaticFiles(directory=PANEL_DIR / "patient", html=True), name="patient")
    app.mount("/static", StaticFiles(directory=PANEL_DIR / "common"), name="static")
    app.mount("/sdk", StaticFiles(directory=SDK_DIR), name="sdk")
    return app


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


async def _quiet(coro: Awaitable[Any]) -> None:
    with contextlib.suppress(MllmdrError):  # already reported as an error event
        await coro


async def _serve_events(srv: Server, ws: WebSocket, session_id: str, claims: Claims, after_seq: int) -> None:
    """History (stored events after ``after_seq``), then live events; client messages answered in turn."""
    sub = srv.bus.subscribe(session_id)
    reader: asyncio.Task[None] | None = None
    try:
        last = after_seq
        for stored in await srv.bus.history(session_id, after_seq):
            await ws.send_text(json.dumps(stored))
            last = max(last, int(stored["seq"]))
        live = srv.manager.sessions.get(session_id)
        row = await srv.store.get_session(session_id)
        if row is not None and row["state"] == "closed" and (live is None or live.closed.is_set()):
            await ws.close(code=1000, reason="session closed")
            return
        reader = asyncio.ensure_future(_read_client(srv, ws, session_id, claims, sub))
        while True:
            getter = asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return  # client went away
            event = getter.result()
            if event is None:
                if sub.overflowed:
                    await ws.close(code=1013, reason="client too slow; reconnect with after_seq to resume")
                else:
                    await ws.close(code=1000, reason="session closed")
                return
            if event.seq and event.seq <= last and event.type not in ("error", "pong"):
                continue
            try:
                await asyncio.wait_for(ws.send_text(event.model_dump_json()), WS_SEND_TIMEOUT_S)
            except TimeoutError:  # the client stopped reading: free the slot, it can resume later
                srv.bus.unsubscribe(sub)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=1013, reason="client too slow"), 1.0)
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        srv.bus.unsubscribe(sub)
        if reader is not None:
            reader.cancel()
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=1000)


async def _read_client(
    srv: Server, ws: WebSocket, session_id: str, claims: Claims, sub: Subscription
) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        ref: str | None = None
        try:
            msg = parse_client_message(raw)
            ref = msg.id
            if msg.type in PUBLISHER_ONLY_TYPES and claims.role != "publisher":
                raise protocol_error("forbidden", f"a {claims.role} may not send {msg.type}")
            if isinstance(msg, PingMessage):
                seq = await srv.bus.allocate_seq(session_id)
                sub.offer(PongEvent(session_id=session_id, seq=seq, ref=ref))
                continue
            session = await srv.manager.get_live(session_id)
            if isinstance(msg, CaptionMessage):
                line = TranscriptLineModel(
                    start_s=msg.start_s, end_s=msg.end_s, speaker=msg.speaker, text=msg.text, final=msg.final
                )
                await session.add_caption(line, ref=ref)  # the ack is broadcast
            elif isinstance(msg, CheckpointRequestMessage):
                session._spawn(_quiet(session.checkpoint(ref=ref)))
            elif isinstance(msg, SessionEndMessage):
                session._spawn(session.end("ended"))
        except (MllmdrError, AuthError) as exc:
            code = error_code_of(exc)
            srv.metrics.ws_errors.inc(1.0, code)
            if ref is None:
                ref = message_ref(raw)  # invalid messages still answer to their id
            seq = await srv.bus.allocate_seq(session_id)
            sub.offer(
                ErrorEvent(
                    session_id=session_id,
                    seq=seq,
                    code=code,  # type: ignore[arg-type]
                    message=str(exc)[:500],
                    ref=ref,
                )
            )
