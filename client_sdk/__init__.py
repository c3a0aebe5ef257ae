"""MLlm-DR Live client SDK: publish a call to ``stream_server`` and read its events (``Session``,
``SyncSession``), or score recordings offline through the same pipeline (``Replayer``, ``run_batch``).

Names are imported lazily so that ``import client_sdk`` stays cheap (no torch, no aiortc).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Session": "client_sdk.session",
    "ServerUnavailable": "client_sdk.session",
    "SyncSession": "client_sdk.sync",
    "Replayer": "client_sdk.replay",
    "ReplayOptions": "client_sdk.replay",
    "ReplayResult": "client_sdk.replay",
    "run_batch": "client_sdk.batch",
    "BatchOptions": "client_sdk.batch",
    "read_transcript": "mllmdr_core.transcripts",
    "resolve_source": "mllmdr_core.media",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'client_sdk' has no attribute {name!r}")
