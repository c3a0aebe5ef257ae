"""Limits on the JSON text clients send: a nesting depth (WebSocket messages and REST bodies), and one
quiet log line instead of a traceback for a WebSocket text frame that is not UTF-8.

Python's ``json`` recurses once per level and raises ``RecursionError`` near 1000 levels: without a
limit a deeply nested message killed the WebSocket reader and a REST body got HTTP 400 ``internal``.
"""

from __future__ import annotations

import logging
import re

from mllmdr_core.errors import ProtocolError

MAX_JSON_DEPTH = 64  # arrays/objects; the deepest real message (an SDP offer body) has depth 1
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
INVALID_UTF8_LOG = "Invalid UTF-8 sequence received from client."  # uvicorn's message (with traceback)


def json_depth(text: str | bytes) -> int:
    """Deepest array/object nesting of ``text`` (brackets inside strings do not count; not validated)."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def json_too_deep(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """A message for the client when ``text`` nests deeper than ``limit``; else None."""
    depth = json_depth(text)
    return f"JSON nested {depth} levels deep; the limit is {limit}" if depth > limit else None


def check_json_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``invalid_message`` when ``text`` nests deeper than ``limit``."""
    problem = json_too_deep(text, limit)
    if problem is not None:
        err = ProtocolError(problem)
        err.code = "invalid_message"
        raise err


class QuietInvalidUtf8(logging.Filter):
    """Turns uvicorn's ``Invalid UTF-8 sequence`` error + traceback into one warning line (it closes
    the socket with 1007 itself); other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == INVALID_UTF8_LOG:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "WebSocket text frame is not UTF-8: closed with 1007"
        return True


def quiet_invalid_utf8_logs(logger_name: str = "uvicorn.error") -> None:
    """Install ``QuietInvalidUtf8`` on uvicorn's error logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QuietInvalidUtf8) for f in logger.filters):
        logger.addFilter(QuietInvalidUtf8())
