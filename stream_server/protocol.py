"""The wire protocol of ``stream_server``: every WebSocket event, client message and REST body.

One pydantic model per event ``type`` (a ``Literal`` tag), shared by the server, the Python SDK and
the browser SDK; ``scripts/gen_protocol.py`` (``make protocol``) generates ``docs/protocol.md``, the JSON
Schema ``client_sdk/js/protocol.schema.json`` and the browser SDK's types ``client_sdk/js/mllmdr.d.ts``
from this module.

Server → client events (``ServerEvent``) all carry ``v`` (protocol version, 1), ``session_id``,
``seq`` (per session, strictly increasing; connection-local events such as ``pong`` or an ``error``
answering one bad message also take a number, so other subscribers may see gaps) and ``ts`` (server
wall clock, Unix seconds). Client → server messages (``ClientMessage``) are parsed with
``parse_client_message``, which raises ``ProtocolError`` whose ``code`` is one of ``ERROR_CODES``.

WebSocket ``/v1/sessions/{id}/events?token=…&after_seq=N``: the stored events with ``seq > N`` first
(history), then live ones. A bad client message gets an ``error`` event (``ref`` = its ``id``) and the
socket stays open. Close codes: 1000 after ``session.closed`` (or on joining an ended session, after
its history); 4401 bad or expired token, 4403 token for another session or role, 4404 unknown session
(each after a fatal ``error`` event naming the code); 1013 the client read too slowly and its bounded
queue overflowed (reconnect with ``after_seq`` = the last ``seq`` seen); 1009 a frame over 1 MiB; 1008
any other fatal error (``WsClose``).

Server events and REST responses are read leniently by the SDKs (``parse_server_event`` ignores fields
it does not know, so an older SDK keeps working against a newer server); client messages and REST
request bodies are strict (an unknown field is rejected).
"""

from __future__ import annotations

import json
import logging
import re
import time
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import TypeAliasType

from mllmdr_core.assessment import Assessment, AudioProcessing
from mllmdr_core.errors import MllmdrError, ProtocolError
from mllmdr_core.frames import TranscriptLine
from stream_server.json_limits import check_json_depth, json_too_deep

if TYPE_CHECKING:
    from aiortc import RTCIceServer

PROTOCOL_VERSION: Literal[1] = 1
MAX_WS_MESSAGE_BYTES = 64 * 1024  # a client message larger than this gets error "too_large"
MAX_HTTP_BODY_BYTES = 256 * 1024  # REST bodies (an SDP offer is ~5-10 KiB)
MAX_TEXT_CHARS = 4000  # one caption line
MAX_SDP_CHARS = 100_000

# Named aliases (``TypeAliasType``) so that the JSON Schema and the generated TypeScript name them.
ErrorCode = TypeAliasType(
    "ErrorCode",
    Literal[
        # from mllmdr_core.errors (exception ``code``s)
        "internal",
        "config_invalid",
        "bundle_invalid",
        "feature_spec_mismatch",
        "media_invalid",
        "auth_failed",
        "protocol_error",
        "backend_unavailable",
        "output_unparsed",
        "storage_error",
        "dataset_invalid",
        # protocol-level
        "bad_json",  # message is not JSON text / not a JSON object
        "unknown_type",  # ``type`` missing or not a known client message type
        "invalid_message",  # known type, fields fail validation
        "too_large",  # message or body over the size limit
        "bad_sdp",  # SDP offer could not be parsed or negotiated
        "forbidden",  # valid token, but its role/session does not allow this
        "token_expired",
        "not_found",  # unknown session id
        "session_closed",  # session already ended
        "conflict",  # e.g. a second live publisher on one session
        "rate_limited",
    ],
)
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode.__value__)

Role = TypeAliasType("Role", Literal["publisher", "clinician"])
Speaker = TypeAliasType("Speaker", Literal["patient", "clinician", "unknown"])
# pending: media ended, the final assessment waits for the LLM backend (retried; then closed)
SessionStateName = TypeAliasType(
    "SessionStateName", Literal["created", "live", "reconnecting", "ending", "pending", "closed"]
)
# why a session ended (``session.closed``'s ``reason``, ``LiveSession.end``)
# expired: created, never used, closed when its tokens lapsed (no assessment)
CloseReason = TypeAliasType(
    "CloseReason", Literal["ended", "publisher_gone", "error", "server_shutdown", "expired"]
)


class WsClose(IntEnum):
    """WebSocket close codes of ``/v1/sessions/{id}/events``."""

    NORMAL = 1000  # after session.closed, or on joining an ended session after its history
    POLICY = 1008  # a fatal error without a code of its own
    TOO_BIG = 1009  # a frame over 1 MiB (refused by uvicorn)
    TRY_AGAIN_LATER = 1013  # the client read too slowly: reconnect with after_seq = the last seq seen
    UNAUTHORIZED = 4401  # bad or expired token (also when an open socket's token expires unrefreshed)
    FORBIDDEN = 4403  # token for another session or role
    NOT_FOUND = 4404  # unknown session


# the close code after a fatal ``error`` event with this code (any other code: ``WsClose.POLICY``)
WS_CLOSE_OF_ERROR: dict[str, WsClose] = {
    "auth_failed": WsClose.UNAUTHORIZED,
    "token_expired": WsClose.UNAUTHORIZED,
    "forbidden": WsClose.FORBIDDEN,
    "not_found": WsClose.NOT_FOUND,
}
# the error code an SDK reports when the server refuses its WebSocket with this close code
ERROR_OF_WS_CLOSE: dict[int, str] = {
    WsClose.UNAUTHORIZED: "auth_failed",
    WsClose.FORBIDDEN: "forbidden",
    WsClose.NOT_FOUND: "not_found",
}


def protocol_error(code: str, message: str) -> ProtocolError:
    """A ``ProtocolError`` carrying a specific wire ``code`` (one of ``ERROR_CODES``)."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    err = ProtocolError(message)
    err.code = code
    return err


def error_code_of(exc: BaseException) -> str:
    """The wire code for any exception: its ``MllmdrError.code`` if known, else ``internal``."""
    code = getattr(exc, "code", None) if isinstance(exc, MllmdrError) else None
    return code if isinstance(code, str) and code in ERROR_CODES else "internal"


class _Model(BaseModel):
    # strict when constructed or parsed by the server; ``json_schema_serialization_defaults_required``:
    # in the schema of what the server sends, a field with a default is still always present
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


# ----------------------------------------------------------------------------------------------------
# Shared payloads


class TranscriptLineModel(_Model):
    """Wire form of ``mllmdr_core.frames.TranscriptLine``."""

    start_s: float = Field(ge=0, allow_inf_nan=False)
    end_s: float = Field(ge=0, allow_inf_nan=False)
    speaker: Speaker = "unknown"
    text: str = Field(max_length=MAX_TEXT_CHARS)
    source: str = Field(default="captions", description='where the line came from: "captions" or an ASR name')
    confidence: float = Field(default=1.0, ge=0, le=1)
    final: bool = Field(default=True, description="False for an ASR partial that a later line replaces")

    @classmethod
    def from_line(cls, line: TranscriptLine) -> TranscriptLineModel:
        return cls(
            start_s=line.start_s,
            end_s=line.end_s,
            speaker=line.speaker,
            text=line.text,
            source=line.source,
            confidence=line.confidence,
            final=line.final,
        )

    def to_line(self) -> TranscriptLine:
        return TranscriptLine(
            start_s=self.start_s,
            end_s=self.end_s,
            speaker=self.speaker,
            text=self.text,
            source=self.source,
            confidence=self.confidence,
            final=self.final,
        )


# ----------------------------------------------------------------------------------------------------
# Server → client events


class _Event(_Model):
    v: Literal[1] = Field(default=PROTOCOL_VERSION, description="protocol version")
    session_id: str
    seq: int = Field(
        default=0, ge=0, description="per session, strictly increasing (connection-local events leave gaps)"
    )
    ts: float = Field(default_factory=time.time, description="server wall clock, Unix seconds")


class SessionCreatedEvent(_Event):
    """First event of every session (also replayed to late joiners)."""

    type: Literal["session.created"] = "session.created"
    bundle_id: str
    training_data: str
    non_clinical: bool
    labels: list[str] = Field(
        default_factory=list, description="e.g. the non-clinical label of a synthetic bundle"
    )
    disclaimer: str
    indicator_interval_s: float = Field(description="seconds between indicators events")
    checkpoint_interval_s: float | None = Field(
        default=None, description="seconds between scheduled checkpoints; null: only on request"
    )
    transcript_source: str = Field(default="captions", description='"captions" or the server\'s ASR')


class SessionStatusEvent(_Event):
    """Lifecycle change: publisher connected, lost (reconnect grace running), ending."""

    type: Literal["session.status"] = "session.status"
    state: SessionStateName
    publisher_connected: bool
    audio: bool = Field(default=False, description="an audio track is being received")
    video: bool = Field(default=False, description="a video track is being received")
    detail: str = ""


class IndicatorsEvent(_Event):
    """Live behavioural indicators over the last ``window_s`` seconds of media (see INDICATOR_INFO)."""

    type: Literal["indicators"] = "indicators"
    media_time_s: float = Field(description="session media time the values refer to (end of window)")
    window_s: float
    values: dict[str, float] = Field(description="indicator name → value (see INDICATOR_INFO)")
    lag_s: float | None = Field(
        default=None, description="processing lag behind the newest received media, when known"
    )
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="indicator name → why it is absent from values (no audio / no video received, no "
        "face in view): shown as 'not available', never as 0",
    )


class TranscriptEvent(_Event):
    """A transcript line (captions from the publisher, or ASR partial/final output)."""

    type: Literal["transcript"] = "transcript"
    line: TranscriptLineModel


class TranscriptAckEvent(_Event):
    """A caption was stored (committed) — sent to the publisher that sent it, over WS or HTTP."""

    type: Literal["transcript.ack"] = "transcript.ack"
    ref: str | None = Field(
        default=None, description="the client's id of the caption message, if it gave one"
    )
    line_index: int = Field(description="0-based index of the line in the session transcript")
    start_s: float
    end_s: float


class CheckpointResultEvent(_Event):
    """A checkpoint assessment of the session so far (requested by a client or scheduled)."""

    type: Literal["checkpoint.result"] = "checkpoint.result"
    ref: str | None = Field(
        default=None, description="the id of the checkpoint.request, when requested by a client"
    )
    trigger: Literal["request", "schedule"] = "request"
    assessment: Assessment


class AssessmentResultEvent(_Event):
    """The final assessment of the session (after session.end or publisher hang-up)."""

    type: Literal["assessment.result"] = "assessment.result"
    assessment: Assessment


class WarningEvent(_Event):
    """Something degrades the analysis but the session goes on."""

    type: Literal["warning"] = "warning"
    code: str = Field(
        description='e.g. "no_video_track", "no_audio_track", "audio_behind", "asr_behind", "publisher_lost"'
    )
    message: str
    detail: dict[str, float | int | str] = Field(default_factory=dict)


class ErrorEvent(_Event):
    """Something failed. ``fatal`` errors end the session (a ``session.closed`` follows)."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    ref: str | None = Field(default=None, description="the client message id this answers, if any")
    fatal: bool = Field(default=False, description="the session (or this connection) ends")
    retry_after_s: float | None = Field(
        default=None, description="rate_limited: seconds until the request would be accepted"
    )


class PongEvent(_Event):
    """Answer to a ``ping`` message (to this connection only)."""

    type: Literal["pong"] = "pong"
    ref: str | None = Field(default=None, description="the ping's id")


class SessionClosedEvent(_Event):
    """Last event of a session; the WebSocket is closed (code 1000) after it."""

    type: Literal["session.closed"] = "session.closed"
    reason: CloseReason
    final_assessment: bool = Field(description="an assessment.result was stored")
    media_time_s: float = 0.0
    partial: bool = Field(
        default=False,
        description="the publisher never came back: the final assessment covers only the media received",
    )


class TokenRefreshedEvent(_Event):
    """Answer to ``token.refresh`` (to this connection only): the socket now lives until ``expires_at``."""

    type: Literal["token.refreshed"] = "token.refreshed"
    ref: str | None = Field(default=None, description="the token.refresh message's id")
    expires_at: float = Field(description="the new token's expiry, Unix seconds")


ServerEvent = Annotated[
    SessionCreatedEvent
    | SessionStatusEvent
    | IndicatorsEvent
    | TranscriptEvent
    | TranscriptAckEvent
    | CheckpointResultEvent
    | AssessmentResultEvent
    | WarningEvent
    | ErrorEvent
    | PongEvent
    | SessionClosedEvent
    | TokenRefreshedEvent,
    Field(discriminator="type"),
]
SERVER_EVENT_ADAPTER: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
SERVER_EVENT_TYPES: tuple[str, ...] = (
    "session.created",
    "session.status",
    "indicators",
    "transcript",
    "transcript.ack",
    "checkpoint.result",
    "assessment.result",
    "warning",
    "error",
    "pong",
    "session.closed",
    "token.refreshed",
)


def parse_server_event(raw: str | bytes | dict[str, Any]) -> ServerEvent:
    """Parse one server event (used by the SDKs); raises ``ProtocolError`` with a code.

    Fields this version does not know are ignored (at every depth), so an SDK keeps reading the events
    of a newer server that adds fields; a missing or mistyped known field is still an error.
    """
    try:
        if isinstance(raw, dict):
            return SERVER_EVENT_ADAPTER.validate_python(raw, extra="ignore")
        return SERVER_EVENT_ADAPTER.validate_json(raw, extra="ignore")
    except ValidationError as exc:
        raise protocol_error("invalid_message", f"bad server event: {_first_error(exc)}") from exc


# ----------------------------------------------------------------------------------------------------
# Client → server messages (WebSocket). Publisher: all; clinician: checkpoint.request, ping.


class _ClientMsg(_Model):
    id: str | None = Field(default=None, max_length=128, description="echoed as ref in the answer")


MAX_CAPTION_TIME_S = 24 * 3600.0  # caption times are seconds since the session began: at most a day
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 except \t \n \r


class _CaptionRules(BaseModel):
    """Checks shared by ``CaptionMessage`` (WebSocket) and ``CaptionIn`` (REST); errors name the field."""

    @field_validator("text", check_fields=False)
    @classmethod
    def _text_is_usable(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty after trimming whitespace")
        bad = _CONTROL_CHARS.search(text)
        if bad is not None:
            raise ValueError(f"text contains control character U+{ord(bad.group()):04X}")
        return text

    @field_validator("start_s", "end_s", check_fields=False)
    @classmethod
    def _time_in_span(cls, value: float) -> float:
        if value > MAX_CAPTION_TIME_S:
            raise ValueError(f"must be at most {MAX_CAPTION_TIME_S:.0f} s (24 h) after the session began")
        return value

    @model_validator(mode="after")
    def _end_not_before_start(self) -> Any:
        if getattr(self, "end_s", 0.0) < getattr(self, "start_s", 0.0):
            raise ValueError("end_s must not be before start_s")
        return self


class CaptionMessage(_ClientMsg, _CaptionRules):
    """A transcript line from the publisher (answered with ``transcript.ack``). Publisher only."""

    type: Literal["caption"] = "caption"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    speaker: Speaker = "unknown"
    start_s: float = Field(ge=0, allow_inf_nan=False)
    end_s: float = Field(ge=0, allow_inf_nan=False)
    final: bool = True


class CheckpointRequestMessage(_ClientMsg):
    """Ask for an assessment now (answered with ``checkpoint.result``)."""

    type: Literal["checkpoint.request"] = "checkpoint.request"


class SessionEndMessage(_ClientMsg):
    """End the session; the final ``assessment.result`` and ``session.closed`` follow. Publisher only."""

    type: Literal["session.end"] = "session.end"


class PingMessage(_ClientMsg):
    """Keep-alive; answered with ``pong``."""

    type: Literal["ping"] = "ping"


class TokenRefreshMessage(_ClientMsg):
    """A fresh token for the same session and role (minted over REST) before this socket's one expires.

    Answered with ``token.refreshed``; without it the socket is closed with 4401 at the token's expiry.
    """

    type: Literal["token.refresh"] = "token.refresh"
    token: str = Field(min_length=1, max_length=4096)


ClientMessage = Annotated[
    CaptionMessage | CheckpointRequestMessage | SessionEndMessage | PingMessage | TokenRefreshMessage,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
CLIENT_MESSAGE_TYPES: tuple[str, ...] = (
    "caption",
    "checkpoint.request",
    "session.end",
    "ping",
    "token.refresh",
)
PUBLISHER_ONLY_TYPES: frozenset[str] = frozenset({"caption", "session.end"})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{loc}: {err.get('msg', 'invalid')}"


def parse_client_message(raw: str | bytes, *, max_bytes: int = MAX_WS_MESSAGE_BYTES) -> ClientMessage:
    """Parse and validate one client WebSocket message.

    Raises ``ProtocolError`` with ``code`` ``too_large``, ``bad_json``, ``unknown_type`` or
    ``invalid_message``.
    """
    size = len(raw.encode("utf-8", "replace") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise protocol_error("too_large", f"message of {size} bytes exceeds the {max_bytes}-byte limit")
    check_json_depth(raw)  # invalid_message when nested deeper than json_limits.MAX_JSON_DEPTH
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise protocol_error("bad_json", f"message is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise protocol_error("bad_json", "message must be a JSON object")
    kind = data.get("type")
    if kind not in CLIENT_MESSAGE_TYPES:
        raise protocol_error(
            "unknown_type", f"unknown message type {str(kind)[:64]!r}; expected one of {CLIENT_MESSAGE_TYPES}"
        )
    try:
        return CLIENT_MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise protocol_error("invalid_message", f"invalid {kind}: {_first_error(exc)}") from exc


def message_ref(raw: str | bytes) -> str | None:
    """The ``id`` of a client message that failed validation, when it has a usable one (for ``ref``)."""
    if len(raw) > MAX_WS_MESSAGE_BYTES or json_too_deep(raw):
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    ref = data.get("id") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and 0 < len(ref) <= 64 else None


# ----------------------------------------------------------------------------------------------------
# REST bodies


class SessionCreateRequest(_Model):
    """Optional body of ``POST /v1/sessions``."""

    external_id: str | None = Field(default=None, max_length=200, description="the platform's own call id")
    checkpoint_interval_s: float | None = Field(default=None, gt=0, description="override the server default")
    ttl_s: int | None = Field(default=None, ge=10, le=86_400, description="lifetime of the returned tokens")


ICE_URL = re.compile(
    r"(?:stuns?:(?P<stun_host>\[[0-9A-Fa-f:.]+\]|[^\s?:/\[\]@]+)(?::(?P<stun_port>\d{1,5}))?"
    r"|turns?:(?P<turn_host>\[[0-9A-Fa-f:.]+\]|[^\s?:/\[\]@]+)(?::(?P<turn_port>\d{1,5}))?"
    r"(?:\?transport=(?:udp|tcp))?)"
)  # RFC 7064 (stun:, stuns:) and RFC 7065 (turn:, turns:) URIs


class IceServer(_Model):
    """One STUN/TURN server, as the WebRTC ``RTCIceServer`` dictionary (browsers take it as is)."""

    urls: list[str] = Field(min_length=1, description='e.g. "turn:turn.example.org:3478?transport=udp"')
    username: str | None = Field(default=None, max_length=512)
    credential: str | None = Field(default=None, max_length=512)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            match = ICE_URL.fullmatch(url)
            port = match and (match["stun_port"] or match["turn_port"])
            if match is None or (port and not 0 < int(port) < 65536):
                raise ValueError(
                    f"{url!r} is not a STUN/TURN URL (stun:host[:port], stuns:…, "
                    "turn:host[:port][?transport=udp|tcp], turns:…)"
                )
        return urls

    @property
    def is_turn(self) -> bool:
        return any(u.startswith("turn") for u in self.urls)


class SessionCreated(_Model):
    """Response of ``POST /v1/sessions``."""

    session_id: str
    publisher_token: str
    clinician_token: str
    expires_at: float = Field(description="token expiry, Unix seconds")
    patient_url: str
    panel_url: str
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers for the publisher's RTCPeerConnection (TURN credentials minted "
        "for this session)",
    )


class IceServersResponse(_Model):
    """Response of ``GET /v1/sessions/{id}/ice-servers`` (publisher token or API key): fresh credentials."""

    ice_servers: list[IceServer]
    expires_at: float | None = Field(
        default=None, description="when minted TURN credentials stop being accepted (Unix seconds)"
    )


class TokenRequest(_Model):
    """Body of ``POST /v1/sessions/{id}/tokens`` (API key): a fresh token for one role."""

    role: Role
    ttl_s: int = Field(default=900, ge=10, le=86_400)


class TokenResponse(_Model):
    """Response of ``POST /v1/sessions/{id}/tokens``."""

    token: str
    expires_at: float = Field(description="token expiry, Unix seconds")


TrackRole = Literal["patient", "interviewer"]
MAX_TRACK_ROLES = 8


class AudioProcessingIn(AudioProcessing):
    """``Offer.audio_processing`` entry: one track's ``getSettings()`` in snake case (``AudioProcessing``)."""

    model_config = ConfigDict(extra="forbid")


class Offer(_Model):
    """Body of ``POST /v1/sessions/{id}/offer`` (publisher token): the WebRTC SDP offer.

    ``tracks`` labels audio tracks (two-party capture): a key is the track's transceiver ``mid`` (as in
    the offer's ``a=mid:`` line) or its track id (the second word of ``a=msid:``), the value its role.
    An ``interviewer`` audio track goes through voice activity detection and speech-to-text only (no
    speech features, no indicators); its lines have ``speaker: "clinician"``. Audio tracks not labelled
    are the patient's (as without ``tracks``); a second unlabelled audio track is refused
    (``bad_sdp``): two patient tracks cannot share one timeline.

    ``audio_processing`` reports, per track role, what capture did to that audio (the browser SDK sends
    each published track's ``getSettings()``); the server stores it with the session and every
    assessment carries it, so a result says whether its audio went through echo cancellation, noise
    suppression or automatic gain control."""

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"] = "offer"
    tracks: dict[str, TrackRole] = Field(
        default_factory=dict, description=f"track mid or msid track id → role; at most {MAX_TRACK_ROLES}"
    )

    @field_validator("tracks")
    @classmethod
    def _few_tracks(cls, value: dict[str, TrackRole]) -> dict[str, TrackRole]:
        if len(value) > MAX_TRACK_ROLES or any(len(k) > 128 for k in value):
            raise ValueError(f"tracks: at most {MAX_TRACK_ROLES} entries, keys of at most 128 characters")
        return value

    audio_processing: dict[TrackRole, AudioProcessingIn] = Field(
        default_factory=dict, description="track role → the capture processing its audio went through"
    )


class Answer(_Model):
    """Response of ``POST /v1/sessions/{id}/offer``: the server's SDP answer."""

    sdp: str
    type: Literal["answer"] = "answer"


class CaptionIn(_Model, _CaptionRules):
    """Body of ``POST /v1/sessions/{id}/captions``; answered with a ``TranscriptAckEvent``."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    speaker: Speaker = "unknown"
    start_s: float = Field(ge=0, allow_inf_nan=False)
    end_s: float = Field(ge=0, allow_inf_nan=False)
    id: str | None = Field(default=None, max_length=128, description="echoed as ref in the ack")
    final: bool = True


class CheckpointAccepted(_Model):
    """Response of ``POST /v1/sessions/{id}/checkpoint``; the result follows as ``checkpoint.result``."""

    request_id: str
    assessment: Assessment | None = Field(
        default=None, description="filled when the request asked ?wait=true"
    )


class SessionEndResponse(_Model):
    """Response of ``POST /v1/sessions/{id}/end`` (waits for the final assessment, bounded)."""

    session_id: str
    state: SessionStateName
    assessment: Assessment | None = None


class SessionInfo(_Model):
    """Response of ``GET /v1/sessions/{id}``."""

    session_id: str
    state: SessionStateName
    created_at: float
    ended_at: float | None = None
    bundle_id: str
    non_clinical: bool
    labels: list[str] = Field(default_factory=list)
    publisher_connected: bool = False
    media_time_s: float = 0.0
    transcript_lines: int = 0
    checkpoints: int = 0
    final_assessment: Assessment | None = None
    last_seq: int = 0
    audio_processing: dict[str, AudioProcessing] = Field(  # str keys: readers accept roles added later
        default_factory=dict, description="per track role, as the last offer reported; {} if not reported"
    )


class IndicatorPoint(_Model):
    """One stored ``indicators`` event in ``SessionExport``."""

    media_time_s: float
    ts: float
    values: dict[str, float]


class SessionExport(_Model):
    """Response of ``GET /v1/sessions/{id}/export``: everything stored for a session."""

    info: SessionInfo
    transcript: list[TranscriptLineModel]
    indicators: list[IndicatorPoint]
    checkpoints: list[Assessment]
    assessment: Assessment | None = None
    events: list[dict[str, Any]] = Field(default_factory=list, description="stored events in seq order")


class HTTPErrorDetail(_Model):
    """The ``error`` object of ``HTTPErrorBody``."""

    code: ErrorCode
    message: str


class HTTPErrorBody(_Model):
    """Body of every non-2xx REST response: ``{"error": {"code": ..., "message": ...}}``."""

    Detail: ClassVar[type[HTTPErrorDetail]] = HTTPErrorDetail

    error: HTTPErrorDetail


# ----------------------------------------------------------------------------------------------------
# Who receives what (least privilege): the patient's publisher token never sees scores or rationales.

# event type → the token roles whose WebSockets receive it (the API key has no socket)
EVENT_AUDIENCE: dict[str, frozenset[Role]] = {
    "session.created": frozenset({"publisher", "clinician"}),
    "session.status": frozenset({"publisher", "clinician"}),
    "indicators": frozenset({"clinician"}),  # behavioural measurements of the patient
    "transcript": frozenset({"clinician"}),
    "transcript.ack": frozenset({"publisher", "clinician"}),
    "checkpoint.result": frozenset({"clinician"}),  # item scores and rationales
    "assessment.result": frozenset({"clinician"}),
    "warning": frozenset({"publisher", "clinician"}),  # publisher: only PUBLISHER_WARNINGS
    "error": frozenset({"publisher", "clinician"}),
    "pong": frozenset({"publisher", "clinician"}),
    "session.closed": frozenset({"publisher", "clinician"}),
    "token.refreshed": frozenset({"publisher", "clinician"}),
}
# the warnings that concern the publisher's connection and media (the others are about the analysis)
PUBLISHER_WARNINGS: frozenset[str] = frozenset(
    {"no_audio_track", "no_video_track", "publisher_lost", "session_resumed"}
)
# REST route → who may call it ("api_key": the platform's key); "publisher*": allowed, results withheld
REST_ACCESS: tuple[tuple[str, str], ...] = (
    ("POST /v1/sessions", "api_key"),
    ("POST /v1/sessions/{id}/tokens", "api_key"),
    ("GET /v1/sessions/{id}/ice-servers", "publisher, api_key"),
    ("POST /v1/sessions/{id}/offer", "publisher"),
    ("POST /v1/sessions/{id}/captions", "publisher"),
    ("POST /v1/sessions/{id}/checkpoint", "publisher*, clinician, api_key"),
    ("POST /v1/sessions/{id}/end", "publisher*, api_key"),
    ("GET /v1/sessions/{id}", "publisher*, clinician, api_key"),
    ("GET /v1/sessions/{id}/export", "clinician, api_key"),
)


def visible_to(role: Role, event_type: str, warning_code: str = "") -> bool:
    """Whether a WebSocket opened with a ``role`` token receives this event."""
    if role not in EVENT_AUDIENCE.get(event_type, frozenset()):
        return False
    return not (role == "publisher" and event_type == "warning" and warning_code not in PUBLISHER_WARNINGS)


def _role_matrix_markdown() -> list[str]:
    yes = {True: "yes", False: "—"}
    only = " (only " + ", ".join(f"`{w}`" for w in sorted(PUBLISHER_WARNINGS)) + ")"
    rows = [
        f"| `{kind}` | {yes['publisher' in EVENT_AUDIENCE[kind]]}"
        + (only if kind == "warning" else "")
        + f" | {yes['clinician' in EVENT_AUDIENCE[kind]]} |"
        for kind in SERVER_EVENT_TYPES
    ]
    return [
        "## Roles",
        "",
        "Events each token role's WebSocket receives (history and live):",
        "",
        "| event | publisher (patient) | clinician |",
        "|---|---|---|",
        *rows,
        "",
        "REST routes (`publisher*`: allowed, but the answer carries no assessment — results need the "
        "clinician token or the API key):",
        "",
        "| route | who may call it |",
        "|---|---|",
        *(f"| `{route}` | {who} |" for route, who in REST_ACCESS),
        "",
        "A socket's token is enforced while it is open: at its `exp` the server sends a fatal "
        "`token_expired` error and closes with 4401, unless the client sent `token.refresh` with a fresh "
        "token of the same session and role (minted with `POST /v1/sessions/{id}/tokens`).",
        "",
    ]


# ----------------------------------------------------------------------------------------------------
# docs/protocol.md


def _example_assessment(session_id: str, kind: Literal["checkpoint", "final"]) -> Assessment:
    from mllmdr_core.assessment import DISCLAIMER, SYNTHETIC_LABEL, Evidence, ItemAssessment, ModelInfo
    from mllmdr_core.phq8 import ITEM_KEYS

    items = [
        ItemAssessment(
            key=key,
            score=1 if key in ("sleep", "tired") else 0,
            generated_score=1 if key in ("sleep", "tired") else 0,
            maa_score=0.8 if key in ("sleep", "tired") else 0.2,
            rationale="The participant reports waking up tired most mornings."
            if key in ("sleep", "tired")
            else "No evidence of this symptom in the interview so far.",
            evidence=[
                Evidence(kind="transcript", text="I wake up tired a lot", start_s=41.2, end_s=43.0),
                Evidence(
                    kind="indicator",
                    text="speech_ratio = 0.41 (30 s window)",
                    name="speech_ratio",
                    value=0.41,
                    start_s=15.0,
                    end_s=45.0,
                ),
            ]
            if key in ("sleep", "tired")
            else [],
        )
        for key in ITEM_KEYS
    ]
    return Assessment(
        session_id=session_id,
        kind=kind,
        created_at=1764160000.0,
        window_start_s=0.0,
        window_end_s=45.0,
        items=items,
        total=2,
        binary=False,
        maa_total=2.8,
        model=ModelInfo(
            bundle_id="demo-20261126-ab12cd34",
            training_data="synthetic",
            non_clinical=True,
            backend="transformers",
        ),
        labels=[SYNTHETIC_LABEL],
        disclaimer=DISCLAIMER,
        timings_ms={"features": 12.0, "llm": 840.0},
    )


def protocol_examples() -> list[BaseModel]:
    """One example of every wire model, in documentation order."""
    sid = "s_3f9c2a7e1b"
    ts = 1764160000.0
    common: dict[str, Any] = {"session_id": sid, "ts": ts}
    from mllmdr_core.assessment import DISCLAIMER, SYNTHETIC_LABEL

    return [
        SessionCreatedEvent(
            **common,
            seq=1,
            bundle_id="demo-20261126-ab12cd34",
            training_data="synthetic",
            non_clinical=True,
            labels=[SYNTHETIC_LABEL],
            disclaimer=DISCLAIMER,
            indicator_interval_s=2.0,
            checkpoint_interval_s=120.0,
        ),
        SessionStatusEvent(**common, seq=2, state="live", publisher_connected=True, audio=True, video=True),
        IndicatorsEvent(
            **common,
            seq=3,
            media_time_s=30.0,
            window_s=30.0,
            lag_s=0.4,
            values={
                "speech_ratio": 0.41,
                "pause_count": 7.0,
                "f0_mean_hz": 142.5,
                "smile_ratio": 0.05,
                "blink_rate_per_min": 14.0,
            },
        ),
        TranscriptEvent(
            **common,
            seq=4,
            line=TranscriptLineModel(
                start_s=41.2, end_s=43.0, speaker="patient", text="I wake up tired a lot"
            ),
        ),
        TranscriptAckEvent(**common, seq=5, ref="c-17", line_index=16, start_s=41.2, end_s=43.0),
        CheckpointResultEvent(
            **common, seq=6, ref="k-1", trigger="request", assessment=_example_assessment(sid, "checkpoint")
        ),
        AssessmentResultEvent(**common, seq=7, assessment=_example_assessment(sid, "final")),
        WarningEvent(
            **common,
            seq=8,
            code="video_frames_dropped",
            message="analysis behind; dropped frames",
            detail={"dropped": 12},
        ),
        ErrorEvent(**common, seq=9, code="bad_json", message="message is not valid JSON"),
        PongEvent(**common, seq=10, ref="p-1"),
        SessionClosedEvent(**common, seq=11, reason="ended", final_assessment=True, media_time_s=45.0),
        TokenRefreshedEvent(**common, seq=12, ref="r-1", expires_at=ts + 3600),
        CaptionMessage(id="c-17", text="I wake up tired a lot", speaker="patient", start_s=41.2, end_s=43.0),
        CheckpointRequestMessage(id="k-1"),
        SessionEndMessage(id="e-1"),
        PingMessage(id="p-1"),
        TokenRefreshMessage(id="r-1", token="eyJhbGciOi..."),
        SessionCreateRequest(external_id="call-8812", checkpoint_interval_s=120.0),
        SessionCreated(
            session_id=sid,
            publisher_token="eyJhbGciOi...",
            clinician_token="eyJhbGciOi...",
            expires_at=ts + 900,
            patient_url=f"http://127.0.0.1:8765/patient/?session={sid}&token=…",
            panel_url=f"http://127.0.0.1:8765/panel/?session={sid}&token=…",
            ice_servers=[
                IceServer(
                    urls=[
                        "turn:turn.example.org:3478?transport=udp",
                        "turns:turn.example.org:443?transport=tcp",
                    ],
                    username=f"{int(ts) + 3600}:{sid}",
                    credential="q3Yq1i0wX4mWgk9q2yZc0VJqYk0=",
                )
            ],
        ),
        IceServersResponse(ice_servers=[IceServer(urls=["stun:stun.example.org:3478"])], expires_at=None),
        TokenRequest(role="clinician", ttl_s=600),
        TokenResponse(token="eyJhbGciOi...", expires_at=ts + 600),
        Offer(sdp="v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\n…"),
        Answer(sdp="v=0\r\no=- 3912 0 IN IP4 127.0.0.1\r\n…"),
        CaptionIn(text="How have you been sleeping?", speaker="clinician", start_s=38.0, end_s=40.1),
        CheckpointAccepted(request_id="k_51c0"),
        HTTPErrorBody(error=HTTPErrorBody.Detail(code="not_found", message="unknown session s_x")),
    ]


def protocol_markdown() -> str:
    """Render ``docs/protocol.md`` from the models (descriptions, fields and one example each)."""
    out = [
        "# Wire protocol (v1)",
        "",
        "<!-- GENERATED by scripts/gen_protocol.py from stream_server/protocol.py (`make protocol`); "
        "edit the models -->",
        "",
        (__doc__ or "").strip(),
        "",
        "## Error codes",
        "",
        ", ".join(f"`{c}`" for c in ERROR_CODES),
        "",
        "## Named types",
        "",
        *(
            f"- `{alias.__name__}`: " + " | ".join(f"`{v}`" for v in get_args(alias.__value__))
            for alias in (Role, Speaker, SessionStateName, CloseReason)
        ),
        "",
        "## WebSocket close codes",
        "",
        *(f"- `{c.value}` {c.name}" for c in WsClose),
        "",
        *_role_matrix_markdown(),
        'Every non-2xx REST response has the body `{"error": {"code": ..., "message": ...}}`.',
        f"Limits: WebSocket message ≤ {MAX_WS_MESSAGE_BYTES} bytes, REST body ≤ {MAX_HTTP_BODY_BYTES} bytes, "
        f"caption text ≤ {MAX_TEXT_CHARS} characters.",
        "",
    ]
    section = ""
    for example in protocol_examples():
        cls = type(example)
        kind = getattr(example, "type", None)
        if isinstance(example, _Event):
            new_section = "## Server → client events"
        elif isinstance(example, _ClientMsg):
            new_section = "## Client → server messages"
        else:
            new_section = "## REST bodies"
        if new_section != section:
            section = new_section
            out += [section, ""]
        title = f"`{kind}` — {cls.__name__}" if isinstance(kind, str) and kind != "offer" else cls.__name__
        out += [f"### {title}", "", (cls.__doc__ or "").strip(), ""]
        fields = [
            f"- `{name}`: {_type_name(info.annotation)}"
            + (f" — {info.description}" if info.description else "")
            for name, info in cls.model_fields.items()
        ]
        out += [*fields, "", "```json", example.model_dump_json(indent=2), "```", ""]
    return "\n".join(out)


def _type_name(annotation: object) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    for module in ("typing.", "mllmdr_core.assessment.", "stream_server.protocol.", "__main__."):
        text = text.replace(module, "")
    return text


_log = logging.getLogger(__name__)


def to_rtc(servers: list[IceServer]) -> list[RTCIceServer]:
    """aiortc ``RTCIceServer``s; URLs aiortc cannot use (``stuns:``, IPv6 literals) are left out (logged).

    aiortc uses the first STUN and the first TURN URL it understands; browsers use them all. The server's
    and the Python SDK's peer connections both call this.
    """
    from aiortc import RTCIceServer
    from aiortc.rtcicetransport import parse_stun_turn_uri

    out: list[RTCIceServer] = []
    for server in servers:
        urls: list[str] = []
        for url in server.urls:
            try:
                if parse_stun_turn_uri(url)["scheme"] in ("stun", "turn", "turns"):
                    urls.append(url)
                    continue
            except ValueError:
                pass
            _log.debug("ICE URL %s not usable by aiortc; this peer connection skips it", url)
        if urls:
            out.append(RTCIceServer(urls=urls, username=server.username, credential=server.credential))
    return out
