"""Shared fixtures: short synthetic interview recordings (espeak-ng speech + astronaut face frames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client_sdk.synth import SyntheticRecording, make_recording


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRecording:
    """A 6 s mp4 (h264 + aac, 320x240 at 15 fps) with its transcript beside it."""
    return make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, name="rec", container="mp4")


@pytest.fixture(scope="session")
def wav_y4m(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRecording:
    """The same kind of interview as a wav + y4m pair."""
    return make_recording(tmp_path_factory.mktemp("pair"), duration_s=6.0, name="pair", wav_y4m=True)


@pytest.fixture(scope="session")
def recordings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two short recordings (mp4 and webm) for batch replay."""
    root = tmp_path_factory.mktemp("batch")
    make_recording(root, duration_s=3.0, name="s1", container="mp4", seed=1)
    make_recording(root, duration_s=3.0, name="s2", container="webm", seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny model bundle (HuBERT + Llama + tokenizer), as the server's demo fallback."""
    from mllmdr_core.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def engine(tiny_bundle: Path) -> Any:
    """The server's real core engine over the tiny bundle."""
    from stream_server.engine import CoreEngine

    return CoreEngine(tiny_bundle)
