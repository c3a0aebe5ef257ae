"""Where a replay's time goes: the per-stage table of ``mllmdr replay --profile`` and ``replay.json``.

Stage times are wall seconds. Resample, VAD, encoder and (inline) speech-to-text come from
``SessionState.stats``; decode, the face tracker (in the video thread of the offline pipeline) and the
speech-to-text worker's own time from ``replay_pipeline.FeedTimes``; the assessment is timed around
``Assessor.assess``; model load is the ``Replayer``'s, once per process, not part of ``wall``. Stages
in other threads or processes overlap the rest, so the stages can add up to more than ``wall``.
``cpu`` is the replaying process's CPU seconds over the replay (all its threads: main, video, the face
mesh's and torch's; not a speech-to-text worker process): ``cpu / wall`` is the cores one replay keeps
busy, and ``cores · media_s / cpu`` the real-time factor a folder of recordings can reach at best.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client_sdk.replay_pipeline import FeedTimes
    from mllmdr_core.bundle import LoadedBundle

# (key, label, where it runs)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("decode_audio", "decode (audio)", "main"),
    ("decode_video", "decode (video)", "video thread"),
    ("resample", "resample (to 16 kHz mono)", "main"),
    ("vad", "VAD", "main"),
    ("encoder", "encoder (HuBERT + prosody)", "main"),
    ("face_tracker", "face tracker", "video thread"),
    ("speech_to_text", "speech-to-text", "worker process"),
    ("speech_to_text_wait", "waiting for speech-to-text", "main"),
    ("assessment", "assessment (8 items)", "main"),
    ("other", "other (feeding, indicators, snapshot)", "main"),
    ("wall", "replay wall time", ""),
    ("cpu", "process CPU (all threads)", ""),
    ("model_load", "model load (once per process)", "main"),
)


def stage_times(
    stats: dict[str, float],
    times: FeedTimes | None,
    assess_s: float,
    wall_s: float,
    load_s: float,
    cpu_s: float = float("nan"),
) -> dict[str, float]:
    """Wall seconds per stage (keys of :data:`STAGES`); ``times`` None: the plain 20 ms loop, where
    decoding was not timed apart and everything ran in the main thread."""
    extra = times.extra if times is not None else {}
    worker_asr = "speech_to_text_s" in extra
    out = {
        "decode_audio": times.audio_decode_s if times is not None else float("nan"),
        "decode_video": times.video_decode_s if times is not None else float("nan"),
        "resample": stats.get("normalize_s", 0.0),
        "vad": stats.get("vad_s", 0.0),
        "encoder": stats.get("encoder_s", 0.0),
        "face_tracker": times.face_s if times is not None and times.face_s else stats.get("face_s", 0.0),
        "speech_to_text": extra["speech_to_text_s"] if worker_asr else stats.get("transcriber_s", 0.0),
        "speech_to_text_wait": extra.get("speech_to_text_wait_s", 0.0),
        "assessment": assess_s,
    }
    main = ["decode_audio", "resample", "vad", "encoder", "speech_to_text_wait", "assessment"]
    if times is None:
        main += ["face_tracker", "speech_to_text"]
    elif not worker_asr:
        main.append("speech_to_text")
    spent = sum(v for k, v in out.items() if k in main and v == v)
    out["other"] = max(0.0, wall_s - spent)
    out["wall"] = wall_s
    out["cpu"] = cpu_s
    out["model_load"] = load_s
    return {k: round(v, 4) for k, v in out.items()}


def format_table(session_id: str, media_s: float, stages: dict[str, float]) -> str:
    """The ``--profile`` table: stage, seconds, share of the replay's wall time, where it ran."""
    wall = stages.get("wall", 0.0)
    rows = [f"{session_id}: {media_s:.1f} s media, real-time factor {media_s / wall:.1f}× (media s / wall s)"]
    rows.append(f"  {'stage':<40} {'seconds':>8} {'of wall':>8}  runs in")
    plain = stages.get("decode_video", 0.0) != stages.get("decode_video", 0.0)  # NaN: the 20 ms loop
    for key, label, where in STAGES:
        value = stages.get(key)
        if value is None or value != value:
            continue
        if plain and where:
            where = "main"
        share = f"{100 * value / wall:.0f}%" if wall and key != "model_load" else ""
        if key == "cpu":  # CPU seconds per wall second: the cores in use
            share = f"{value / wall:.2f} cores" if wall else ""
        rows.append(f"  {label:<40} {value:8.3f} {share:>8}  {where}")
    return "\n".join(rows)


def int8_bundle(bundle: LoadedBundle) -> LoadedBundle:
    """``bundle`` with its HuBERT's Linear layers dynamically quantised to int8 once (CPU speed-up; the
    features differ slightly from fp32: an option for replay, not what the bundle was trained with).
    A bundle whose config already says ``audio.int8`` is returned as it is (its encoder quantises)."""
    from mllmdr_core.features.encoder import build_hubert, quantize_int8

    if bundle.config.audio.int8:
        return bundle
    model = bundle.audio_encoder if bundle.audio_encoder is not None else build_hubert(bundle.config.audio)
    quantised: Any = quantize_int8(model)  # still a HubertModel, its Linear layers swapped for int8 ones
    return dataclasses.replace(bundle, audio_encoder=quantised)
