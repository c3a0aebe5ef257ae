"""Python SDK: one live screening session on a ``stream_server`` (asyncio-native).

::

    async with await Session.create("http://127.0.0.1:8765", api_key="...") as s:
        await s.publish_file("call.mp4")              # or publish_camera(), publish_tracks(...)
        await s.send_caption("How did you sleep?", speaker="clinician", start_s=3.0, end_s=4.5)
        async for event in s.events():                # typed events from stream_server.protocol
            if event.type == "indicators":
                print(event.values)
            if event.type == "assessment.result":
                break
        final = await s.end()                         # the final Assessment

Errors are ``mllmdr_core.errors`` types carrying the server's wire ``code`` (``AuthError`` for
``auth_failed`` / ``forbidden`` / ``token_expired``; ``ProtocolError`` for protocol and state errors;
``BackendError`` for ``backend_unavailable``; :class:`ServerUnavailable` when the server cannot be
reached). The publisher re-offers on the same session when its peer connection fails (network loss),
within the server's reconnect grace; the event stream reconnects and skips events it already saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from mllmdr_core.assessment import Assessment
from mllmdr_core.errors import AuthError, BackendError, MllmdrError, ProtocolError, StorageError
from stream_server.protocol import (
    ERROR_OF_WS_CLOSE,
    AssessmentResultEvent,
    CaptionIn,
    CheckpointAccepted,
    IceServer,
    IceServersResponse,
    Offer,
    ServerEvent,
    SessionClosedEvent,
    SessionCreated,
    SessionCreateRequest,
    SessionEndResponse,
    SessionExport,
    SessionInfo,
    TokenResponse,
    TranscriptAckEvent,
    parse_server_event,
)

log = logging.getLogger("client_sdk")

EVENT_QUEUE_MAX = 1000  # per subscriber; the oldest events are dropped (and counted) beyond this
WS_CLOSE_TIMEOUT_S = 3.0  # close(): wait this long for the event WebSocket's closing handshake


class ServerUnavailable(MllmdrError):
    """The server could not be reached (connection refused, DNS, timeout)."""

    code = "server_unavailable"


_AUTH_CODES = {"auth_failed", "forbidden", "token_expired"}


def _error(code: str, message: str, status: int | None = None) -> MllmdrError:
    """The ``mllmdr_core.errors`` type for a wire error code (``code`` attribute set to the wire code)."""
    cls: type[MllmdrError]
    if code in _AUTH_CODES:
        cls = AuthError
    elif code == "backend_unavailable":
        cls = BackendError
    elif code == "storage_error":
        cls = StorageError
    elif code == "internal":
        cls = MllmdrError
    else:
        cls = ProtocolError
    err = cls(f"{message} (code {code}{f', HTTP {status}' if status else ''})")
    err.code = code
    return err


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        detail = resp.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code = {
            401: "auth_failed",
            403: "forbidden",
            404: "not_found",
            409: "conflict",
            429: "rate_limited",
        }.get(resp.status_code, "internal")
        message = resp.text[:200] or resp.reason_phrase
    raise _error(code, message, resp.status_code)


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        self.dropped = 0

    def put(self, item: ServerEvent | None) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1


class Session:
    """A live session seen from a telehealth platform: publish media, send captions, read events."""

    def __init__(
        self,
        server_url: str,
        session_id: str,
        *,
        token: str,
        api_key: str | None = None,
        created: SessionCreated | None = None,
        http: httpx.AsyncClient | None = None,
        reconnect: bool = True,
        reconnect_timeout_s: float = 20.0,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.session_id = session_id
        self.token = token
        # events and reads: a publisher token sees no results (docs/protocol.md, Roles); a session the
        # platform created reads with its clinician token
        self.read_token = created.clinician_token if created is not None else token
        self.api_key = api_key
        self.created = created
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self._http = http or new_http_client()
        self._own_http = http is None
        self._subscribers: list[_Subscriber] = []
        self._ws_task: asyncio.Task[None] | None = None
        self._ws_ready = asyncio.Event()
        self._ws: Any = None
        self._last_seq = 0
        self._final: asyncio.Future[Assessment] = asyncio.get_running_loop().create_future()
        self._closed_event: SessionClosedEvent | None = None
        self._publisher: Any = None  # client_sdk.publisher.Publisher, created on first publish
        self._closed = False
        self.reconnects = 0  # how many times the event stream reconnected

    # --- creation -------------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        server_url: str,
        api_key: str,
        *,
        external_id: str | None = None,
        checkpoint_interval_s: float | None = None,
        ttl_s: int | None = None,
        http: httpx.AsyncClient | None = None,
        reconnect: bool = True,
    ) -> Session:
        """Create a new session with a platform API key; the SDK then acts as its publisher."""
        client = http or new_http_client()
        body = SessionCreateRequest(
            external_id=external_id, checkpoint_interval_s=checkpoint_interval_s, ttl_s=ttl_s
        ).model_dump(exclude_none=True)
        try:
            resp = await _request(client, "POST", f"{server_url.rstrip('/')}/v1/sessions", api_key, json=body)
            created = SessionCreated.model_validate(resp.json(), extra="ignore")
        except BaseException:
            if http is None:
                await client.aclose()
            raise
        session = cls(
            server_url,
            created.session_id,
            token=created.publisher_token,
            api_key=api_key,
            created=created,
            http=client,
            reconnect=reconnect,
        )
        session._own_http = http is None
        return session

    @classmethod
    async def attach(cls, server_url: str, session_id: str, token: str, *, reconnect: bool = True) -> Session:
        """Join an existing session with a token (publisher: may publish; clinician: read-only)."""
        return cls(server_url, session_id, token=token, reconnect=reconnect)

    async def mint_token(self, role: Literal["publisher", "clinician"], ttl_s: int = 900) -> TokenResponse:
        """A fresh token for this session (needs the API key)."""
        if self.api_key is None:
            raise AuthError("minting a token needs the platform API key")
        resp = await self._post("tokens", {"role": role, "ttl_s": ttl_s}, auth=self.api_key)
        return TokenResponse.model_validate(resp.json(), extra="ignore")

    # --- HTTP -----------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.server_url}/v1/sessions/{self.session_id}{'/' + path if path else ''}"

    async def _post(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        auth: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        return await _request(
            self._http,
            "POST",
            self._url(path),
            auth or self.token,
            json=body or {},
            params=params,
            timeout=timeout,
        )

    async def info(self) -> SessionInfo:
        resp = await _request(self._http, "GET", self._url(""), self.read_token)
        return SessionInfo.model_validate(resp.json(), extra="ignore")

    async def export(self) -> SessionExport:
        """Everything stored for the session (clinician token or API key)."""
        resp = await _request(self._http, "GET", self._url("export"), self.api_key or self.read_token)
        return SessionExport.model_validate(resp.json(), extra="ignore")

    async def send_caption(
        self,
        text: str,
        *,
        speaker: Literal["patient", "clinician", "unknown"] = "unknown",
        start_s: float,
        end_s: float,
        final: bool = True,
        ref: str | None = None,
    ) -> TranscriptAckEvent:
        """Send one caption/transcript line; returns the server's acknowledgement."""
        body = CaptionIn(text=text, speaker=speaker, start_s=start_s, end_s=end_s, final=final, id=ref)
        resp = await self._post("captions", body.model_dump(exclude_none=True))
        event = parse_server_event(resp.json())
        if not isinstance(event, TranscriptAckEvent):
            raise ProtocolError(f"expected transcript.ack, got {event.type}")
        return event

    async def checkpoint(self, *, wait: bool = False, timeout_s: float = 120.0) -> CheckpointAccepted:
        """Ask for a checkpoint assessment; with ``wait`` the response carries it."""
        resp = await self._post("checkpoint", params={"wait": "true"} if wait else None, timeout=timeout_s)
        return CheckpointAccepted.model_validate(resp.json(), extra="ignore")

    async def end(self, *, timeout_s: float = 180.0) -> Assessment | None:
        """End the session, then stop publishing, and return the final assessment.

        The end request goes first: closing the peer connection first would make the server see a lost
        publisher (``reconnecting``, ``publisher_lost``) before the end.
        """
        if self._publisher is not None:
            self._publisher.reconnect = False  # the server closes the connection now: no re-offer
        try:
            resp = await self._post("end", timeout=timeout_s)
        finally:
            if self._publisher is not None:
                await self._publisher.close()
        ended = SessionEndResponse.model_validate(resp.json(), extra="ignore")
        if ended.assessment is not None:
            self._set_final(ended.assessment)
            return ended.assessment
        with contextlib.suppress(asyncio.TimeoutError):
            return await self.wait_final(timeout_s=timeout_s)
        return None

    # --- media ----------------------------------------------------------------------------------------

    async def _ensure_publisher(self) -> Any:
        from client_sdk.publisher import Publisher

        if self._publisher is None:
            self._publisher = Publisher(
                self._offer,
                reconnect=self.reconnect,
                reconnect_timeout_s=self.reconnect_timeout_s,
                ice_servers=self.ice_servers,
            )
        return self._publisher

    async def ice_servers(self) -> list[IceServer]:
        """The server's STUN/TURN servers for publishing, with fresh TURN credentials (each connection)."""
        resp = await _request(self._http, "GET", self._url("ice-servers"), self.token)
        return IceServersResponse.model_validate(resp.json(), extra="ignore").ice_servers

    async def _offer(self, offer: Offer) -> dict[str, Any]:
        resp = await self._post("offer", offer.model_dump())
        data: dict[str, Any] = resp.json()
        return data

    async def publish_file(
        self,
        path: str | Path,
        *,
        video: str | Path | None = None,
        loop: bool = False,
        interviewer_channel: Literal["left", "right"] | None = None,
        interviewer: str | Path | None = None,
    ) -> None:
        """Publish a recording (mp4/webm/mkv/…; or a wav with ``video=`` a y4m) in real time over WebRTC.
        Two-party: ``interviewer_channel`` (one party per stereo channel) or ``interviewer`` (the
        interviewer's own audio file) sends the interviewer as a second, labelled audio track."""
        from client_sdk.publisher import file_sources

        pub = await self._ensure_publisher()
        sources = file_sources(
            path, video=video, loop=loop, interviewer_channel=interviewer_channel, interviewer=interviewer
        )
        await pub.start(sources)

    async def publish_camera(
        self,
        video_device: str | None = "default",
        audio_device: str | None = "default",
        *,
        size: str = "640x480",
        fps: int = 15,
    ) -> None:
        """Publish the local camera and microphone (v4l2/pulse on Linux, avfoundation on macOS)."""
        from client_sdk.publisher import camera_sources

        pub = await self._ensure_publisher()
        await pub.start(camera_sources(video_device, audio_device, size=size, fps=fps))

    async def publish_tracks(self, audio: Any = None, video: Any = None, *, interviewer: Any = None) -> None:
        """Publish aiortc ``MediaStreamTrack``s you made yourself; ``interviewer``: the interviewer's
        audio track (two-party capture)."""
        from client_sdk.publisher import TrackSources

        pub = await self._ensure_publisher()
        await pub.start(TrackSources(audio=audio, video=video, interviewer=interviewer))

    async def wait_media_ended(self, timeout_s: float | None = None) -> None:
        """Wait until a published file has been sent to the end."""
        if self._publisher is None:
            return
        await asyncio.wait_for(self._publisher.wait_ended(), timeout_s)

    @property
    def publisher(self) -> Any:
        return self._publisher

    # --- events ---------------------------------------------------------------------------------------

    def _ws_url(self) -> str:
        base = self.server_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/v1/sessions/{self.session_id}/events"

    async def connect_events(self, timeout_s: float = 10.0) -> None:
        """Open the event stream now (``events()`` opens it on first use)."""
        if self._ws_task is None:
            self._ws_task = asyncio.ensure_future(self._ws_loop())
        waiter = asyncio.ensure_future(self._ws_ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._ws_task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            if self._ws_task in done and self._ws_task.exception() is not None:
                raise self._ws_task.exception()  # type: ignore[misc]
            if not self._ws_ready.is_set():
                raise ServerUnavailable(
                    f"event stream of {self.session_id} did not open in {timeout_s:.0f} s"
                )

    async def _ws_loop(self) -> None:
        import websockets

        delay = 0.25
        deadline: float | None = None
        while not self._closed and self._closed_event is None:
            refused: str | None = None
            try:
                # after_seq: the server replays stored events we have not seen (resume after a drop)
                url = f"{self._ws_url()}?token={self.read_token}&after_seq={self._last_seq}"
                async with websockets.connect(url, open_timeout=10, max_size=4 * 1024 * 1024) as ws:
                    self._ws = ws
                    self._ws_ready.set()
                    delay, deadline = 0.25, None
                    try:
                        async for raw in ws:
                            self._dispatch(raw)
                            if self._closed_event is not None:
                                break
                    finally:
                        refused = ERROR_OF_WS_CLOSE.get(ws.close_code or 0)
                if self._closed_event is not None:
                    break
            except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status in (401, 403):
                    self._fail(
                        _error("auth_failed", f"event stream refused the token (HTTP {status})", status)
                    )
                    return
                if status == 404:
                    self._fail(_error("not_found", f"unknown session {self.session_id}", status))
                    return
                log.info("event stream lost (%s); reconnecting", exc)
            if refused is not None and self._closed_event is None:
                self._fail(_error(refused, "the server closed the event stream"))
                return
            if not self.reconnect:
                self._fail(ServerUnavailable("event stream closed"))
                return
            deadline = deadline or time.monotonic() + self.reconnect_timeout_s
            if time.monotonic() > deadline:
                self._fail(ServerUnavailable(f"event stream lost for {self.reconnect_timeout_s:.0f} s"))
                return
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        for sub in self._subscribers:
            sub.put(None)

    async def drop_event_stream(self) -> None:
        """Close the event WebSocket as a network loss would; it reconnects and resumes (tests, failover)."""
        if self._ws is not None:
            await self._ws.close()

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            event = parse_server_event(raw)
        except ProtocolError as exc:
            log.warning("dropping malformed server event: %s", exc)
            return
        if event.seq and event.seq <= self._last_seq and event.type != "session.created":
            return  # already seen before a reconnect
        self._last_seq = max(self._last_seq, event.seq)
        if isinstance(event, AssessmentResultEvent):
            self._set_final(event.assessment)
        if isinstance(event, SessionClosedEvent):
            self._closed_event = event
        for sub in self._subscribers:
            sub.put(event)

    def _fail(self, exc: MllmdrError) -> None:
        if not self._final.done():
            self._final.set_exception(exc)
            self._final.exception()  # mark retrieved: callers may never await it
        for sub in self._subscribers:
            sub.put(None)
        self._error = exc

    def _set_final(self, assessment: Assessment) -> None:
        if not self._final.done():
            self._final.set_result(assessment)

    async def events(self, *, types: set[str] | None = None) -> AsyncIterator[ServerEvent]:
        """Typed server events from now on (until ``session.closed``); ``types`` filters by ``type``."""
        sub = _Subscriber()
        self._subscribers.append(sub)
        try:
            await self.connect_events()
            while True:
                event = await sub.queue.get()
                if event is None:
                    err = getattr(self, "_error", None)
                    if err is not None:
                        raise err
                    return
                if types is None or event.type in types:
                    yield event
                if event.type == "session.closed":
                    return
        finally:
            self._subscribers.remove(sub)

    async def wait_final(self, timeout_s: float | None = None) -> Assessment:
        """The final assessment (from ``assessment.result`` or the end response)."""
        if self._ws_task is None and not self._final.done():
            await self.connect_events()
        return await asyncio.wait_for(asyncio.shield(self._final), timeout_s)

    def on_event(self, callback: Callable[[ServerEvent], None]) -> asyncio.Task[None]:
        """Call ``callback`` for every event in a background task (cancel the task to stop)."""

        async def run() -> None:
            async for event in self.events():
                callback(event)

        return asyncio.ensure_future(run())

    # --- lifecycle ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop publishing and the event stream, release the HTTP client (idempotent; does not end it)."""
        if self._closed:
            return
        self._closed = True
        if self._publisher is not None:
            await self._publisher.close()
        if self._ws_task is not None:
            await self._stop_event_stream(self._ws_task)
        for sub in self._subscribers:
            sub.put(None)
        if self._own_http:
            await self._http.aclose()

    async def _stop_event_stream(self, task: asyncio.Task[None]) -> None:
        """Close the event WebSocket with its closing handshake, then end the task. Cancelling the task
        mid-handshake (e.g. right after ``session.closed``) would leave its TCP socket open, and the
        caller's event loop (``asyncio.run`` in the CLI) may close first: the socket then leaks."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), WS_CLOSE_TIMEOUT_S)
        if not task.done():
            await asyncio.wait({task}, timeout=WS_CLOSE_TIMEOUT_S)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        transport = getattr(ws, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()  # the handshake did not finish: close the socket now
            await asyncio.sleep(0)  # lets the transport release its socket

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# uvicorn closes idle keep-alive connections after 5 s, httpx keeps them 5 s too: a request sent on a
# connection the server is closing fails with ReadError / RemoteProtocolError. Expire ours earlier, and
# retry idempotent requests once on those errors.
KEEPALIVE_EXPIRY_S = 2.0
STALE_CONNECTION_ERRORS = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_http_client() -> httpx.AsyncClient:
    """The SDK's HTTP client: 30 s request timeout, 5 s connect, short-lived keep-alive connections."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0), limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S)
    )


async def _request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    token: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
    timeout: float | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    try:
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if json is not None and method != "GET":
            kwargs["json"] = json
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = await client.request(method, url, **kwargs)
        except STALE_CONNECTION_ERRORS:
            if method not in IDEMPOTENT_METHODS:
                raise
            # A pooled keep-alive connection the server closed as we sent: a fresh one answers.
            resp = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise ServerUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    _raise_for(resp)
    return resp


def event_to_json(event: ServerEvent) -> str:
    """One line of JSON for an event (used by ``mllmdr watch --json``)."""
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
