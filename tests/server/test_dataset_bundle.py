"""A bundle trained on the E-DAIC format fixture ("visual-v2") serves a live call (real aiortc peer)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stream_server.engine import CoreEngine
from training.cli import main

from .conftest import make_settings, run_server
from .peers import publish

sys.path.insert(0, str(Path(__file__).parents[1] / "training" / "data"))
from test_edaic_reader import make_edaic


@pytest.fixture(scope="module")
def edaic_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("edaic")
    root = make_edaic(tmp / "data")
    args = [
        "paper",
        "--dataset",
        "e-daic",
        "--data",
        str(root),
        "--config",
        "micro",
        "--workdir",
        str(tmp / "w"),
    ]
    assert main([*args, "--quiet"]) == 0
    return tmp / "w" / "bundle"


async def test_dataset_bundle_serves_a_live_call(tmp_path: Path, edaic_bundle: Path, recording: Path) -> None:
    engine = CoreEngine(edaic_bundle)
    async with run_server(make_settings(tmp_path), engine) as server:
        s = await server.create_session()
        sid = s["session_id"]
        clin = await server.events(sid, s["clinician_token"])
        pub = await publish(server.http, sid, s["publisher_token"], recording)
        await clin.wait("indicators", pred=lambda e: e["media_time_s"] > 3.0, timeout=40)
        r = await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "I wake up at four", "speaker": "patient", "start_s": 1, "end_s": 2},
        )
        assert r.status_code < 300, r.text
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())  # results: API key
        assert r.status_code == 200, r.text
        model = r.json()["assessment"]["model"]
        assert model["modalities"] == ["text", "audio", "video"]
        assert model["training_data"] == "E-DAIC train split (2 sessions)" and model["non_clinical"] is False
        await pub.close()
        await clin.close()
