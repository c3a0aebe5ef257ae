"""ASGI middleware of the HTTP app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from stream_server.http_errors import error_response
from stream_server.json_limits import json_too_deep


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
            await error_response("too_large", f"body over {self.limit} bytes")(scope, receive, send)
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
                await error_response("too_large", f"body over {self.limit} bytes")(scope, receive, send)
                return
        if (too_deep := json_too_deep(body)) is not None:  # stream_server/json_limits.py
            await error_response("invalid_message", too_deep)(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
