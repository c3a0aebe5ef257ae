"""Session REST routes: create, tokens, ICE servers, SDP offer/answer, captions, checkpoint, end, read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request

from mllmdr_core.errors import MllmdrError
from stream_server.auth import Claims
from stream_server.ice import credentials_expire_at, ice_servers_for
from stream_server.protocol import (
    Answer,
    CaptionIn,
    CheckpointAccepted,
    IceServersResponse,
    IndicatorPoint,
    Offer,
    SessionCreated,
    SessionCreateRequest,
    SessionEndResponse,
    SessionExport,
    SessionInfo,
    SessionStateName,
    TokenRequest,
    TokenResponse,
    TranscriptAckEvent,
    TranscriptLineModel,
    protocol_error,
)
from stream_server.server import ServerDep, bearer_of

router = APIRouter(prefix="/v1/sessions")


def is_patient(claims: Claims | None) -> bool:
    """A publisher token (the patient): REST answers carry no assessment (docs/protocol.md, Roles)."""
    return claims is not None and claims.role == "publisher"


async def quiet(coro: Awaitable[Any]) -> None:
    with contextlib.suppress(MllmdrError):  # already reported as an error event
        await coro


@router.post("", status_code=201)
async def create_session(
    srv: ServerDep, request: Request, body: SessionCreateRequest | None = None
) -> SessionCreated:
    key = bearer_of(request)
    srv.issuer.check_api_key(key)
    srv.create_limit.check(key or "")
    body = body or SessionCreateRequest()
    settings = srv.settings
    ttl = body.ttl_s or settings.token_ttl_s
    session = await srv.manager.create(
        external_id=body.external_id, checkpoint_interval_s=body.checkpoint_interval_s, expires_in_s=ttl
    )
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


@router.post("/{session_id}/tokens")
async def mint_token(srv: ServerDep, session_id: str, request: Request, body: TokenRequest) -> TokenResponse:
    srv.issuer.check_api_key(bearer_of(request))
    if await srv.store.get_session(session_id) is None:
        raise protocol_error("not_found", f"unknown session {session_id}")
    token, exp = srv.issuer.mint(session_id, body.role, body.ttl_s)
    return TokenResponse(token=token, expires_at=exp)


@router.get("/{session_id}/ice-servers")
async def ice_servers(srv: ServerDep, session_id: str, request: Request) -> IceServersResponse:
    """STUN/TURN servers for the publisher's peer connection, with fresh TURN credentials."""
    srv.auth(request, session_id, ("publisher",), api_key_ok=True)
    if await srv.store.get_session(session_id) is None:
        raise protocol_error("not_found", f"unknown session {session_id}")
    now = time.time()
    return IceServersResponse(
        ice_servers=ice_servers_for(srv.settings, session_id, now=now),
        expires_at=credentials_expire_at(srv.settings, now=now),
    )


@router.post("/{session_id}/offer")
async def offer(srv: ServerDep, session_id: str, request: Request, body: Offer) -> Answer:
    srv.auth(request, session_id, ("publisher",), api_key_ok=False)
    session = await srv.manager.get_live(session_id)
    t0 = time.perf_counter()
    answer = await session.accept_offer(body)
    srv.metrics.stage_seconds.observe(time.perf_counter() - t0, "offer")
    return answer


@router.post("/{session_id}/captions")
async def caption(srv: ServerDep, session_id: str, request: Request, body: CaptionIn) -> TranscriptAckEvent:
    srv.auth(request, session_id, ("publisher",), api_key_ok=False)
    srv.caption_limit.check(session_id)
    session = await srv.manager.get_live(session_id)
    line = TranscriptLineModel(
        start_s=body.start_s, end_s=body.end_s, speaker=body.speaker, text=body.text, final=body.final
    )
    return await session.add_caption(line, ref=body.id)


@router.post("/{session_id}/checkpoint")
async def checkpoint(
    srv: ServerDep, session_id: str, request: Request, wait: bool = False
) -> CheckpointAccepted:
    claims = srv.auth(request, session_id, ("publisher", "clinician"), api_key_ok=True)
    srv.checkpoint_limit.check(session_id)
    session = await srv.manager.get_live(session_id)
    request_id = "k_" + str(int(time.time() * 1000))
    if wait:
        result = await session.checkpoint(ref=request_id)
        return CheckpointAccepted(request_id=request_id, assessment=None if is_patient(claims) else result)
    session.spawn(quiet(session.checkpoint(ref=request_id)))
    return CheckpointAccepted(request_id=request_id)


@router.post("/{session_id}/end")
async def end(srv: ServerDep, session_id: str, request: Request) -> SessionEndResponse:
    claims = srv.auth(request, session_id, ("publisher",), api_key_ok=True)
    withheld = is_patient(claims)  # the patient ends the call; the results go to the clinician
    session = srv.manager.get(session_id)
    if session is None or not session.live:
        try:
            session = await srv.manager.get_live(session_id)
        except MllmdrError as exc:
            if getattr(exc, "code", "") != "session_closed":
                raise
            info = await srv.info(session_id)
            final = None if withheld else info.final_assessment
            return SessionEndResponse(session_id=session_id, state=info.state, assessment=final)
    task = session.spawn(session.end("ended"))
    try:
        result = await asyncio.wait_for(asyncio.shield(task), srv.settings.end_timeout_s)
    except TimeoutError:
        return SessionEndResponse(session_id=session_id, state="ending")
    state: SessionStateName = "pending" if session.status == "pending" else "closed"  # pending: retried
    return SessionEndResponse(session_id=session_id, state=state, assessment=None if withheld else result)


@router.get("/{session_id}")
async def get_session(srv: ServerDep, session_id: str, request: Request) -> SessionInfo:
    claims = srv.auth(request, session_id, ("publisher", "clinician"), api_key_ok=True)
    info = await srv.info(session_id)
    return info.model_copy(update={"final_assessment": None}) if is_patient(claims) else info


@router.get("/{session_id}/export")
async def export(srv: ServerDep, session_id: str, request: Request) -> SessionExport:
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
