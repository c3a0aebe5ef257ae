"""HTTP hardening as one ASGI middleware: a request-header size limit (431), a WebSocket ``Origin``
allowlist (403 before the handshake), and security headers on every HTTP response.

- Header limit: the request line's path and query plus every header name and value, in bytes, at most
  ``Settings.max_header_bytes``. (uvicorn's default ``httptools`` parser has no limit of its own.)
- ``Origin``: a WebSocket whose ``Origin`` is neither the server's own (the ``Host`` it was reached at,
  or ``Settings.public_url``) nor listed in ``Settings.allowed_origins`` is refused; no ``Origin`` =
  a non-browser client (SDKs, platforms' servers), allowed: it carries its token like any other.
- Headers: ``Content-Security-Policy`` (no ``unsafe-eval``, no inline script; ``frame-ancestors`` from
  ``Settings.frame_ancestors`` for platforms that embed the panel), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` (URLs carry session ids; tokens ride in the fragment).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from stream_server.protocol import HTTPErrorBody
from stream_server.settings import Settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

# What the panel and patient pages need: own scripts/styles, WebSocket to this server, the camera
# preview (blob:/mediastream:), data: images for the plot's export.
CSP_BASE = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'"
)


def content_security_policy(frame_ancestors: str) -> str:
    """The CSP header value; ``frame_ancestors`` is its source list (e.g. ``'self' https://x.org``)."""
    return f"{CSP_BASE}; frame-ancestors {frame_ancestors}"


def security_headers(frame_ancestors: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", content_security_policy(frame_ancestors).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


def header_bytes(scope: Scope) -> int:
    """Size of the request's path, query and headers (names + values) in bytes."""
    size = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string", b""))
    return size + sum(len(name) + len(value) for name, value in scope.get("headers") or [])


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, without a trailing slash."""
    parts = urlsplit(url.strip())
    return (
        f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else url.strip().lower()
    )


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """A WebSocket ``Origin`` is fine when absent (not a browser), same host:port as the ``Host`` the
    server was reached at, or one of ``allowed`` (origins, compared as ``scheme://host[:port]``)."""
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if host and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower():
        return True
    return origin_of(origin) in {origin_of(a) for a in allowed}


def _error_body(code: str, message: str) -> bytes:
    body = HTTPErrorBody(error=HTTPErrorBody.Detail(code=code, message=message))  # type: ignore[arg-type]
    return body.model_dump_json().encode()


class HttpSecurity:
    """The ASGI middleware (outermost: it answers before anything reads the request)."""

    def __init__(
        self,
        app: Any,
        *,
        own_origin: str,
        allowed_origins: Iterable[str] = (),
        frame_ancestors: str = "'self'",
        max_header_bytes: int = 16 * 1024,
    ) -> None:
        self.app = app
        self.allowed = (own_origin, *allowed_origins)
        self.max_header_bytes = max_header_bytes
        self.headers = security_headers(frame_ancestors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        size = header_bytes(scope)
        if size > self.max_header_bytes:
            message = f"request headers of {size} bytes exceed the {self.max_header_bytes}-byte limit"
            await self._refuse(scope, send, 431, "too_large", message)
            return
        if kind == "websocket":
            headers = {name.lower(): value for name, value in scope.get("headers") or []}
            origin, host = headers.get(b"origin"), headers.get(b"host")
            if not origin_allowed(
                origin.decode("latin-1") if origin is not None else None,
                host.decode("latin-1") if host is not None else None,
                self.allowed,
            ):
                await self._refuse(scope, send, 403, "forbidden", "WebSocket Origin not allowed")
                return
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        body = _error_body(code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers + self.headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403


def http_security_options(settings: Settings) -> dict[str, Any]:
    """``HttpSecurity``'s keyword arguments from the server settings."""
    return {
        "own_origin": origin_of(settings.base_url),
        "allowed_origins": tuple(settings.allowed_origins),
        "frame_ancestors": settings.frame_ancestors,
        "max_header_bytes": settings.max_header_bytes,
    }
