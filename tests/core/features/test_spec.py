from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mllmdr_core.config import AudioEncoderConfig, MllmdrConfig, VisualConfig
from mllmdr_core.errors import ConfigError, FeatureSpecError
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert
from mllmdr_core.features.face import VISUAL_DIM
from mllmdr_core.features.spec import FeatureSpec, ensure_supported, extractor_spec

from .test_encoder import TINY_HUBERT


def _cfg(**audio: object) -> MllmdrConfig:
    return MllmdrConfig(audio=AudioEncoderConfig(hubert=dict(TINY_HUBERT), **audio))  # type: ignore[arg-type]


def test_extractor_spec_matches_encoder_width() -> None:
    cfg = _cfg()
    spec = extractor_spec(cfg)
    assert spec == FeatureSpec("hubert+prosody-v1", 36, "mediapipe-face-v1", VISUAL_DIM)
    assert StreamingHubertEncoder(cfg.audio, build_hubert(cfg.audio)).feature_dim == spec.audio_dim
    assert extractor_spec(_cfg(prosody=False)).audio_spec == "hubert-v1"
    assert extractor_spec(MllmdrConfig()).audio_dim == 768 + 4  # HuBERT-base default
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    ensure_supported(spec, cfg)


def test_pretrained_path_is_read(tmp_path: Path) -> None:
    cfg = _cfg()
    build_hubert(cfg.audio).save_pretrained(tmp_path / "h")
    from_path = MllmdrConfig(audio=AudioEncoderConfig(model=str(tmp_path / "h")))
    assert extractor_spec(from_path).audio_dim == 36
    with pytest.raises(ConfigError):
        extractor_spec(MllmdrConfig(audio=AudioEncoderConfig(model=str(tmp_path / "nope"))))


def test_mismatches_are_refused_clearly() -> None:
    cfg = _cfg()
    live = extractor_spec(cfg)
    with pytest.raises(FeatureSpecError, match="not producible live"):
        ensure_supported(dataclasses.replace(live, visual_spec="openface-pose-gaze-au-v1", visual_dim=9), cfg)
    with pytest.raises(FeatureSpecError, match=r"audio: bundle wants 'hubert\+prosody-v1' \(1028-d\)"):
        ensure_supported(dataclasses.replace(live, audio_dim=1028), cfg)
    with pytest.raises(FeatureSpecError, match="not producible live"):
        extractor_spec(dataclasses.replace(cfg, visual=VisualConfig(spec="openface-pose-gaze-au-v1")))
    with pytest.raises(FeatureSpecError):
        FeatureSpec.from_dict({"audio_spec": "x"})
