"""The events WebSocket: stored history after ``after_seq``, then live events; client messages answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from mllmdr_core.errors import AuthError, MllmdrError
from stream_server.auth import Claims
from stream_server.bus import Subscription
from stream_server.protocol import (
    PUBLISHER_ONLY_TYPES,
    WS_CLOSE_OF_ERROR,
    CaptionMessage,
    CheckpointRequestMessage,
    ErrorEvent,
    PingMessage,
    PongEvent,
    SessionEndMessage,
    TokenRefreshedEvent,
    TokenRefreshMessage,
    TranscriptLineModel,
    WsClose,
    error_code_of,
    message_ref,
    parse_client_message,
    protocol_error,
    visible_to,
)
from stream_server.ratelimit import retry_after_of
from stream_server.routes.sessions import quiet
from stream_server.server import Server, ServerDep

router = APIRouter()


@dataclass
class Lease:
    """An open socket's token: its role, and its expiry (moved on by ``token.refresh``)."""

    claims: Claims
    exp: float

    async def expired(self) -> None:
        """Returns at the (possibly refreshed) expiry."""
        while (left := self.exp - time.time()) > 0:
            await asyncio.sleep(left)


@router.websocket("/v1/sessions/{session_id}/events")
async def events(
    srv: ServerDep, ws: WebSocket, session_id: str, token: str | None = None, after_seq: int = 0
) -> None:
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
        await ws.close(code=WS_CLOSE_OF_ERROR.get(code, WsClose.POLICY), reason=code)
        return
    await serve_events(srv, ws, session_id, claims, after_seq)


async def serve_events(srv: Server, ws: WebSocket, session_id: str, claims: Claims, after_seq: int) -> None:
    """History (stored events after ``after_seq``), then live events; client messages answered in turn."""
    sub = srv.bus.subscribe(session_id)
    reader: asyncio.Task[None] | None = None
    lease = Lease(claims, claims.exp)
    expiry = asyncio.ensure_future(lease.expired())
    role = claims.role
    slow = False  # closed with 1013 (or given up on): no second close
    try:
        last = after_seq
        for stored in await srv.bus.history(session_id, after_seq):
            last = max(last, int(stored["seq"]))
            if not visible_to(role, str(stored.get("type")), str(stored.get("code", ""))):
                continue
            try:  # a client that resumes and does not read is bounded like a live one
                await asyncio.wait_for(ws.send_text(json.dumps(stored)), srv.settings.ws_send_timeout_s)
            except TimeoutError:
                slow = True
                await close_slow(srv, ws, sub, "history_timeout")
                return
        live = srv.manager.get(session_id)
        row = await srv.store.get_session(session_id)
        if row is not None and row["state"] == "closed" and (live is None or not live.live):
            await ws.close(code=WsClose.NORMAL, reason="session closed")
            return
        reader = asyncio.ensure_future(read_client(srv, ws, session_id, lease, sub))
        while True:
            getter = asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({getter, reader, expiry}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if expiry in done:  # the token lapsed on an open socket, unrefreshed
                    await close_expired(srv, ws, session_id)
                return  # client went away
            event = getter.result()
            if event is None:
                if sub.overflowed:
                    slow = True
                    await close_slow(srv, ws, sub, "overflow")
                else:
                    await ws.close(code=WsClose.NORMAL, reason="session closed")
                return
            if event.seq and event.seq <= last and event.type not in ("error", "pong", "token.refreshed"):
                continue
            if not visible_to(role, event.type, getattr(event, "code", "")):
                continue
            try:
                await asyncio.wait_for(ws.send_text(event.model_dump_json()), srv.settings.ws_send_timeout_s)
            except TimeoutError:  # the client stopped reading: free the slot, it can resume later
                slow = True
                await close_slow(srv, ws, sub, "send_timeout")
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        srv.bus.unsubscribe(sub)
        expiry.cancel()
        if reader is not None:
            reader.cancel()
        if ws.application_state == WebSocketState.CONNECTED and not slow:
            with contextlib.suppress(Exception):  # bounded: a client that does not read blocks the close
                await asyncio.wait_for(ws.close(code=WsClose.NORMAL), srv.settings.ws_send_timeout_s)


async def close_slow(srv: Server, ws: WebSocket, sub: Subscription, cause: str) -> None:
    """A subscriber that reads too slowly: its queue is dropped at once, then close 1013. The close
    frame goes out behind the events already buffered for the client, so it waits (up to
    ``ws_send_timeout_s``) for the client to read that far; a client that reads on sees every event it
    was sent, then 1013, and resumes with ``after_seq``."""
    srv.bus.unsubscribe(sub)
    srv.metrics.ws_slow.inc(1.0, cause)
    with contextlib.suppress(Exception):
        closing = ws.close(code=WsClose.TRY_AGAIN_LATER, reason="client too slow; reconnect with after_seq")
        await asyncio.wait_for(closing, srv.settings.ws_send_timeout_s)


async def close_expired(srv: Server, ws: WebSocket, session_id: str) -> None:
    """A fatal ``token_expired`` error, then close 4401."""
    srv.metrics.ws_errors.inc(1.0, "token_expired")
    event = ErrorEvent(session_id=session_id, code="token_expired", message="token expired", fatal=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.send_text(event.model_dump_json()), 1.0)
        await asyncio.wait_for(ws.close(code=WsClose.UNAUTHORIZED, reason="token_expired"), 1.0)


async def read_client(srv: Server, ws: WebSocket, session_id: str, lease: Lease, sub: Subscription) -> None:
    """Client messages in turn: each answered (ack, pong, result events) or refused with an error event."""
    claims = lease.claims
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
            if isinstance(msg, TokenRefreshMessage):  # same session, same role: the socket lives on
                fresh = srv.issuer.verify(msg.token, session_id, (claims.role,))
                lease.exp = max(lease.exp, fresh.exp)
                seq = await srv.bus.allocate_seq(session_id)
                sub.offer(TokenRefreshedEvent(session_id=session_id, seq=seq, ref=ref, expires_at=lease.exp))
                continue
            session = await srv.manager.get_live(session_id)
            if isinstance(msg, CaptionMessage):
                srv.caption_limit.check(session_id)
                line = TranscriptLineModel(
                    start_s=msg.start_s, end_s=msg.end_s, speaker=msg.speaker, text=msg.text, final=msg.final
                )
                await session.add_caption(line, ref=ref)  # the ack is broadcast
            elif isinstance(msg, CheckpointRequestMessage):
                srv.checkpoint_limit.check(session_id)
                session.spawn(quiet(session.checkpoint(ref=ref)))
            elif isinstance(msg, SessionEndMessage):
                session.spawn(session.end("ended"))
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
                    retry_after_s=retry_after_of(exc),
                )
            )
