"""HTTP error answers: every non-2xx body is ``{"error": {"code", "message"}}`` with a stable code."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mllmdr_core.errors import MllmdrError
from stream_server.metrics import ServerMetrics
from stream_server.protocol import HTTPErrorBody, error_code_of
from stream_server.ratelimit import retry_after_of

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


def error_response(code: str, message: str) -> JSONResponse:
    body = HTTPErrorBody(error=HTTPErrorBody.Detail(code=code, message=message))  # type: ignore[arg-type]
    return JSONResponse(body.model_dump(), status_code=STATUS_OF_CODE.get(code, 500))


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Typed errors, request validation and Starlette's own HTTP errors all answer the error body."""

    @app.exception_handler(MllmdrError)
    async def on_mllmdr_error(_request: Request, exc: MllmdrError) -> JSONResponse:
        code = error_code_of(exc)
        metrics.ws_errors.inc(1.0, code)
        response = error_response(code, str(exc))
        retry_after = retry_after_of(exc)
        if retry_after is not None:  # 429: whole seconds until a request would pass
            response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        metrics.ws_errors.inc(1.0, "invalid_message")
        return error_response("invalid_message", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_message", 404: "not_found", 405: "invalid_message", 413: "too_large"}.get(
            exc.status_code, "internal"
        )  # 400: a body FastAPI could not parse
        response = error_response(code, str(exc.detail))
        response.status_code = exc.status_code
        return response
