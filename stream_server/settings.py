"""Runtime settings of ``mllmdr-server``: defaults, overridden by ``MLLMDR_*`` environment variables.

The one place the server reads its environment: limits, database, LLM backend, ICE. Every field
``name`` is ``MLLMDR_<NAME>``; ``DATABASE_URL`` (no prefix) selects the store:
``sqlite+aiosqlite:///var/mllmdr.db`` by default, ``postgresql+asyncpg://…`` for Postgres
(:func:`database_backend` decides which, for every caller). ``MLLMDR_LLM_BACKEND=vllm`` with the
``MLLMDR_VLLM_*`` fields selects a remote vLLM (:meth:`Settings.vllm` → the core's ``VLLMSettings``).
``MLLMDR_ICE_SERVERS`` is a JSON list of ``RTCIceServer`` dictionaries (``stream_server/ice.py``);
list-valued ``MLLMDR_ICE_HOST_ADDRESSES`` is comma-separated.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mllmdr_core.errors import ConfigError
from stream_server.auth import MIN_JWT_SECRET_CHARS
from stream_server.protocol import IceServer

if TYPE_CHECKING:  # the backend module imports torch; the entry script must stay light (asr.py)
    from mllmdr_core.backends.vllm_backend import VLLMSettings

DatabaseBackend = Literal["sqlite", "postgresql"]


def database_backend(url: str) -> DatabaseBackend:
    """Which store a SQLAlchemy URL selects: ``sqlite[+driver]:`` or ``postgresql[+driver]:``."""
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if dialect == "sqlite":
        return "sqlite"
    if dialect in ("postgresql", "postgres"):
        return "postgresql"
    raise ConfigError(
        f"database URL must be sqlite+aiosqlite:///… or postgresql+asyncpg://…, got dialect {dialect!r}"
    )


class Settings(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)  # errors must not echo secrets into logs

    host: str = "127.0.0.1"
    port: int = 8765
    public_url: str | None = None  # base URL printed in links; default http://host:port
    api_key: str | None = None  # MLLMDR_API_KEY; --demo generates one
    jwt_secret: str | None = None  # MLLMDR_JWT_SECRET; random per process when unset (tokens die on restart)
    database_url: str = "sqlite+aiosqlite:///var/mllmdr.db"
    bundle_path: str | None = None  # model bundle directory
    var_dir: str = "var"
    demo: bool = False
    # auto: ASR (whisper_model, else pocketsphinx) until the platform sends patient captions
    transcript_source: Literal["auto", "captions", "pocketsphinx", "whisper"] = "auto"
    whisper_model: str | None = None
    indicator_interval_s: float = Field(default=2.0, gt=0)
    indicator_window_s: float = Field(default=30.0, gt=0)
    checkpoint_interval_s: float | None = None  # None: checkpoints only on request
    reconnect_grace_s: float = Field(default=20.0, ge=0)
    media_timeout_s: float = Field(default=10.0, gt=0)  # no frames this long while connected = publisher lost
    assess_retry_base_s: float = Field(default=2.0, ge=0)  # back-off before retrying a failed assessment
    pending_retry_max_s: float = Field(default=300.0, gt=0)  # longest wait between pending-assessment tries
    end_timeout_s: float = Field(default=120.0, gt=0)  # POST /end waits this long for the assessment
    token_ttl_s: int = Field(default=3600, ge=10)
    audio_queue_frames: int = Field(default=3000, ge=10)  # 20 ms frames: 60 s
    video_queue_frames: int = Field(default=8, ge=1)
    ws_queue_events: int = Field(default=1000, ge=10)  # per subscriber; overflow disconnects it
    # A subscriber that takes no event for this long is closed with 1013; its close frame then waits up
    # to as long again behind the events already buffered for it (docs/server.md, docs/reliability.md)
    ws_send_timeout_s: float = Field(default=10.0, gt=0)
    max_sessions: int = Field(default=32, ge=1)
    session_create_per_min: int = Field(default=120, ge=1)  # rate limit per API key (burst = one minute's)
    # Rate limits (stream_server/ratelimit.py token buckets): a burst, then a steady rate; over it: 429 with
    # Retry-After (REST) or an error event rate_limited with retry_after_s (WebSocket).
    checkpoint_burst: int = Field(default=3, ge=1)  # checkpoint requests per session at once
    checkpoint_per_min: float = Field(default=6.0, gt=0)  # then this many per session per minute
    caption_burst: int = Field(default=200, ge=1)  # captions per session at once
    caption_per_s: float = Field(default=20.0, gt=0)  # then this many per session per second
    # Session lifecycle: a session nobody published media to (state still created) is closed after this
    # many seconds, or when its tokens expire if that is sooner (docs/reliability.md)
    unused_session_ttl_s: float = Field(default=900.0, gt=0)
    workers: int = Field(default=max(2, os.cpu_count() or 2), ge=1)  # analysis threads
    # torch intra-op threads: sessions already run in parallel analysis threads; more oversubscribes.
    # Process-wide, so the CLI entry (stream_server.__main__) sets it; embedders of create_app set theirs.
    torch_threads: int = Field(default=1, ge=1)
    # checkpoints/finals with the embedded model: "thread" = in this process's threads; "process" = one
    # model worker process per server process (stream_server/model_worker.py: off the GIL and the ingest
    # threads, at lower CPU priority). "thread" stays the default: with the demo and HuBERT-base bench
    # bundles the worker did not lower the ingest lag (docs/benchmarks.md). vLLM always assesses in threads.
    assess_worker: Literal["process", "thread"] = "thread"
    assess_worker_threads: int = Field(default=1, ge=1)  # torch threads of the model worker
    assess_worker_nice: int = Field(default=5, ge=0, le=19)  # its CPU priority below the ingest's
    record_audio: bool = False  # keep the received audio as WAV under <var_dir>/recordings/
    # the full-frame-rate eye-openness pass of the blink indicator (mllmdr_core/features/eye_openness.py);
    # off: thinned-out frames are let go, blink rate from the analysed frames only (bench/session_cost.py)
    eye_pass: bool = True
    ice_host_addresses: list[str] | None = None  # e.g. ["127.0.0.1"] on loopback-only hosts
    # STUN/TURN for the server's peer connections and its clients (MLLMDR_ICE_SERVERS, JSON list)
    ice_servers: list[IceServer] = Field(default_factory=list)
    turn_secret: str | None = None  # coturn static-auth-secret: per-session TURN credentials
    turn_ttl_s: int = Field(default=4 * 3600, ge=60, le=7 * 86_400)  # must outlast a call
    pending_claim_ttl_s: float = Field(default=60.0, gt=0)  # an instance's hold on a pending session
    pending_scan_s: float = Field(default=30.0, gt=0)  # look for unclaimed pending sessions this often
    # LLM backend: the embedded transformers model, or a remote vLLM (docs/deploy.md; core VLLMSettings)
    # "vllm-native": vLLM with this project's plugin (text + soft tokens; no LLM weights here);
    # "" and "embedded" = transformers
    llm_backend: Literal["transformers", "vllm", "vllm-native"] = "transformers"
    vllm_url: str | None = None
    vllm_model: str | None = None  # the server's --served-model-name
    vllm_export: str | None = None  # merged export dir: hidden size checked before sending
    vllm_api_key: str | None = None
    vllm_max_tokens: int | None = Field(default=None, ge=1)  # None: the bundle's llm.max_new_tokens
    vllm_suppress_placeholders: bool = True  # logit bias −100 on <AudioHere>/<VideoHere>, as embedded
    vllm_timeout_s: float = Field(default=120.0, gt=0)  # one HTTP attempt
    vllm_connect_timeout_s: float = Field(default=5.0, gt=0)
    vllm_retries: int = Field(default=2, ge=0)  # more attempts after connection errors, 408/429/5xx
    vllm_backoff_s: float = Field(default=0.5, ge=0)  # first back-off, doubled per retry
    # None: bf16 for prompt embeddings (vllm), fp32 for the plugin's small LQ-former outputs (vllm-native)
    vllm_wire_dtype: Literal["bfloat16", "float16", "float32"] | None = None
    vllm_maa_url: str | None = None  # vllm-native: the plugin's pooling server (MAA head)
    vllm_maa_model: str | None = None  # its served model name (default: vllm_model)

    @field_validator("llm_backend", mode="before")
    @classmethod
    def _backend_alias(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return "transformers" if value in ("", "embedded") else value
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        try:
            database_backend(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    # HTTP hardening (stream_server/http_security.py). MLLMDR_ALLOWED_ORIGINS is comma-separated: the
    # platform origins whose pages may open the events WebSocket (the server's own origin always may).
    allowed_origins: list[str] = Field(default_factory=list)
    frame_ancestors: str = "'self'"  # CSP frame-ancestors, e.g. "'self' https://platform.example"
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # request line + headers; more: 431

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: str | None) -> str | None:
        if value and len(value) < MIN_JWT_SECRET_CHARS:  # checked here: at start-up, before the model loads
            raise ValueError(f"MLLMDR_JWT_SECRET must be at least {MIN_JWT_SECRET_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> Settings:
        for i, server in enumerate(self.ice_servers):
            if (
                server.is_turn
                and not self.turn_secret
                and (server.username is None or server.credential is None)
            ):
                raise ValueError(
                    f"ice_servers[{i}] ({server.urls[0]}) is a TURN server without username/credential: "
                    "give both, or set MLLMDR_TURN_SECRET (coturn static-auth-secret) to mint them"
                )
            if (server.username is None) != (server.credential is None):
                raise ValueError(f"ice_servers[{i}]: give username and credential together")
        return self

    @model_validator(mode="after")
    def _vllm_needs_url_and_model(self) -> Settings:
        if self.llm_backend != "transformers" and not (self.vllm_url and self.vllm_model):
            raise ValueError(
                f"MLLMDR_LLM_BACKEND={self.llm_backend} needs MLLMDR_VLLM_URL and MLLMDR_VLLM_MODEL"
            )
        return self

    def vllm(self) -> VLLMSettings | None:
        """The vLLM backend's settings, or None for the embedded transformers backend."""
        from mllmdr_core.backends.vllm_backend import VLLMSettings

        if self.llm_backend == "transformers" or not self.vllm_url or not self.vllm_model:
            return None  # (a vLLM backend without URL or model is refused when the settings load)
        return VLLMSettings(
            url=self.vllm_url,
            model=self.vllm_model,
            export=self.vllm_export,
            api_key=self.vllm_api_key,
            max_tokens=self.vllm_max_tokens,
            suppress_placeholders=self.vllm_suppress_placeholders,
            timeout_s=self.vllm_timeout_s,
            connect_timeout_s=self.vllm_connect_timeout_s,
            retries=self.vllm_retries,
            backoff_s=self.vllm_backoff_s,
            wire_dtype=self.vllm_wire_dtype,
            native=self.llm_backend == "vllm-native",
            maa_url=self.vllm_maa_url,
            maa_model=self.vllm_maa_model,
        )

    @property
    def database_backend(self) -> DatabaseBackend:
        return database_backend(self.database_url)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults ← ``MLLMDR_<FIELD>`` / ``DATABASE_URL`` env vars ← explicit overrides."""
        values: dict[str, object] = {}
        for name, info in cls.model_fields.items():
            raw = os.environ.get(f"MLLMDR_{name.upper()}")
            if raw is None:
                continue
            if name == "ice_host_addresses":
                values[name] = [a.strip() for a in raw.split(",") if a.strip()]
            elif name == "ice_servers":
                values[name] = _json_list("MLLMDR_ICE_SERVERS", raw)
            elif info.annotation in (bool, "bool"):
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[name] = raw
        if os.environ.get("DATABASE_URL"):
            values["database_url"] = os.environ["DATABASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigError(f"invalid server settings: {exc}") from exc

    def ensure_secrets(self) -> Settings:
        """Fill a random JWT secret (and, in demo mode, API key) when none was configured."""
        update: dict[str, object] = {}
        if not self.jwt_secret:
            update["jwt_secret"] = secrets.token_urlsafe(32)
        if not self.api_key and self.demo:
            update["api_key"] = "demo-" + secrets.token_urlsafe(18)
        if not (self.api_key or update.get("api_key")):
            raise ConfigError("no API key: set MLLMDR_API_KEY (or run with --demo)")
        return self.model_copy(update=update)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def var_path(self) -> Path:
        return Path(self.var_dir)


def _json_list(variable: str, raw: str) -> list[object]:
    if not raw.strip():
        return []  # set but empty (e.g. compose's ${MLLMDR_ICE_SERVERS:-}): none
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{variable} is not valid JSON ({exc}); expected e.g. "
            '[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]'
        ) from exc
    if not isinstance(value, list):
        raise ConfigError(
            f"{variable} must be a JSON list of {{urls, username, credential}} objects, "
            f"got {type(value).__name__}"
        )
    return value
