"""Feature specs: the names and widths of the vectors a bundle was trained on vs what we extract live.

Audio "hubert+prosody-v1": pooled HuBERT last hidden states (5 Hz by default) ⊕ prosody
(f0_semitones, energy_db, voiced) ⊕ speech flag — width hidden_size + 4 (``features/encoder.py``);
without prosody the spec is "hubert-v1" (width hidden_size). Visual: the spec of a registered face
tracker (``features/face.py``): "mediapipe-face-v1" (19 values, the demo bundle's) or "visual-v2"
(``features/visual_schema.py``), the schema the dataset readers map OpenFace/CLNF files onto, so a
dataset-trained bundle serves live. Older dataset bundles declared "openface-pose-gaze-au-v1" (raw
OpenFace columns), which no live extractor produces: a server refuses such a bundle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transformers import HubertConfig

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import ConfigError, FeatureSpecError
from mllmdr_core.features.face import face_tracker_specs, visual_dim
from mllmdr_core.features.prosody import PROSODY_NAMES
from mllmdr_core.features.visual_schema import V2_NAMES, V2_SPEC, check_columns

AUDIO_SPEC = "hubert+prosody-v1"
AUDIO_SPEC_NO_PROSODY = "hubert-v1"
OPENFACE_SPEC = "openface-pose-gaze-au-v1"
AUDIO_EXTRA_DIMS = len(PROSODY_NAMES) + 1  # prosody + speech flag


@dataclass(frozen=True)
class FeatureSpec:
    """What a bundle was trained on. ``visual_columns``: the "visual-v2" values observed in its training
    data (the rest are masked at serving); ``sources``: where its features came from, e.g.
    ``("e-daic: OpenFace 2.x CSV", "e-daic: wav")``. Both empty for bundles written before them."""

    audio_spec: str
    audio_dim: int
    visual_spec: str
    visual_dim: int
    visual_columns: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # JSON gives lists
        object.__setattr__(self, "visual_columns", tuple(str(c) for c in self.visual_columns))
        object.__setattr__(self, "sources", tuple(str(c) for c in self.sources))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        try:
            return cls(str(data["audio_spec"]), int(data["audio_dim"]), str(data["visual_spec"]),
                       int(data["visual_dim"]), tuple(data.get("visual_columns", ())),
                       tuple(data.get("sources", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureSpecError(f"malformed feature spec {data!r}: {exc}") from exc


def _hubert_hidden(cfg: MllmdrConfig) -> int:
    if cfg.audio.model is None:
        return int(HubertConfig(**cfg.audio.hubert).hidden_size)
    try:
        return int(HubertConfig.from_pretrained(cfg.audio.model).hidden_size)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the HuBERT config at {cfg.audio.model!r}: {exc}") from exc


def audio_feature_dim(cfg: MllmdrConfig) -> int:
    """Width of the live audio vector for ``cfg`` (without building the encoder)."""
    return _hubert_hidden(cfg) + (AUDIO_EXTRA_DIMS if cfg.audio.prosody else 0)


def extractor_spec(cfg: MllmdrConfig) -> FeatureSpec:
    """What the live extractors (StreamingHubertEncoder, the face tracker of ``cfg.visual.spec``) produce."""
    audio = (AUDIO_SPEC if cfg.audio.prosody else AUDIO_SPEC_NO_PROSODY, audio_feature_dim(cfg))
    if cfg.visual.spec not in face_tracker_specs():
        raise FeatureSpecError(
            f"visual spec {cfg.visual.spec!r} is not producible live; face trackers make "
            + ", ".join(repr(s) for s in face_tracker_specs())
        )
    return FeatureSpec(audio[0], audio[1], cfg.visual.spec, visual_dim(cfg.visual.spec))


def ensure_supported(spec: FeatureSpec, cfg: MllmdrConfig) -> None:
    """Raise ``FeatureSpecError`` unless the live extractors for ``cfg`` produce exactly ``spec``."""
    live = extractor_spec(cfg)
    problems = []
    if (spec.audio_spec, spec.audio_dim) != (live.audio_spec, live.audio_dim):
        problems.append(
            f"audio: bundle wants {spec.audio_spec!r} ({spec.audio_dim}-d), live extractor makes "
            f"{live.audio_spec!r} ({live.audio_dim}-d)"
        )
    if (spec.visual_spec, spec.visual_dim) != (live.visual_spec, live.visual_dim):
        hint = " (dataset-only features, not producible live)" if spec.visual_spec == OPENFACE_SPEC else ""
        problems.append(
            f"visual: bundle wants {spec.visual_spec!r} ({spec.visual_dim}-d){hint}, live extractor makes "
            f"{live.visual_spec!r} ({live.visual_dim}-d)"
        )
    if problems:
        raise FeatureSpecError("feature spec mismatch: " + "; ".join(problems))
    if spec.visual_spec == V2_SPEC:
        check_columns(spec.visual_columns, V2_NAMES, f"the live tracker {V2_SPEC!r}")
