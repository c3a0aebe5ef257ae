"""The capture processing a publisher reported for its audio tracks (``Offer.audio_processing``).

Kept in the session's stored meta under ``audio_processing`` (so a resumed session and a pending final
assessment keep it) and copied into every assessment of the session, so a result says whether its
audio went through echo cancellation, noise suppression or automatic gain control.
"""

from __future__ import annotations

from typing import Any

from mllmdr_core.assessment import Assessment, AudioProcessing
from stream_server.protocol import AudioProcessingIn, TrackRole

META_KEY = "audio_processing"

Processing = dict[TrackRole, AudioProcessing]


def reported(offered: dict[TrackRole, AudioProcessingIn]) -> Processing:
    """An offer's ``audio_processing`` as the core's ``AudioProcessing`` values."""
    return {role: AudioProcessing.model_validate(p.model_dump()) for role, p in offered.items()}


def to_meta(processing: Processing) -> dict[str, Any]:
    """Role → the reported settings as stored JSON (unreported settings left out)."""
    return {role: p.model_dump(exclude_none=True) for role, p in processing.items()}


def from_meta(meta: dict[str, Any]) -> Processing:
    """What ``to_meta`` stored in a session's meta ({} when nothing was reported)."""
    stored: dict[TrackRole, Any] = meta.get(META_KEY) or {}
    return {role: AudioProcessing.model_validate(value) for role, value in stored.items()}


def stamp(result: Assessment, processing: Processing) -> Assessment:
    """``result`` carrying ``processing`` (unchanged when nothing was reported)."""
    if not processing:
        return result
    return result.model_copy(update={"audio_processing": dict(processing)})
