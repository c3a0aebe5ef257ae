"""End to end on the format fixtures: `mllmdr-train paper --dataset … --config micro` trains a tiny bundle
whose "visual-v2" schema the live tracker produces, so it replays a recording with video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_daic_reader import make_daic
from test_edaic_reader import make_edaic

from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.synth import make_recording
from mllmdr_core.bundle import load_bundle
from mllmdr_core.features.visual_schema import V2_SPEC
from training.cli import main
from training.pipeline import load_corpus
from training.run_config import load_run_config


def _train(dataset: str, root: Path, work: Path, *extra: str) -> int:
    return main(
        [
            "paper",
            "--dataset",
            dataset,
            "--data",
            str(root),
            "--config",
            "micro",
            "--workdir",
            str(work),
            "--quiet",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec = make_recording(tmp_path_factory.mktemp("rec"), duration_s=6.0, name="x", container="mp4")
    assert rec.video is not None and rec.lines  # a transcript beside the video
    return rec.video


@pytest.mark.parametrize("dataset", ["e-daic", "daic-woz"])
def test_dataset_bundle_trains_and_replays_video(dataset: str, tmp_path: Path, recording: Path) -> None:
    root = (make_edaic if dataset == "e-daic" else make_daic)(tmp_path / "data")
    work = tmp_path / "w"
    assert _train(dataset, root, work) == 0
    manifest = json.loads((work / "bundle" / "bundle.json").read_text())
    spec = manifest["feature_spec"]
    assert spec["visual_spec"] == V2_SPEC and spec["visual_dim"] == 32
    title = {"e-daic": "E-DAIC", "daic-woz": "DAIC-WOZ"}[dataset]
    assert (
        manifest["training_data"] == f"{title} train split (2 sessions)" and manifest["non_clinical"] is False
    )
    assert "eye_open" not in spec["visual_columns"]  # no source gives it: masked live too
    if dataset == "e-daic":
        assert "AU45_r" in spec["visual_columns"] and "e-daic: OpenFace 2.x CSV" in spec["sources"]
    else:  # CLNF files have no AU45 intensity; only session 300 has CLNF files
        assert "AU45_r" not in spec["visual_columns"] and "daic-woz: CLNF pose/gaze/AUs" in spec["sources"]
    dropped = json.loads((work / "sessions_dropped.json").read_text())
    test_id = "600" if dataset == "e-daic" else "303"
    assert {(d["session_id"], d["split"]) for d in dropped} == {("302", "dev"), (test_id, "test")}
    assert all("no PHQ-8 item labels" in d["reason"] for d in dropped)
    report = json.loads((work / "eval" / "report.json").read_text())  # the test split: totals only
    total = {"e-daic": 20, "daic-woz": 17}[dataset]
    assert report["ablations"]["all"]["totals"]["true"] == [total]
    assert (
        report["ablations"]["all"]["all"]["n_items"] == 0
        and report["ablations"]["all"]["all"]["item_mae"] == {}
    )

    assert load_bundle(work / "bundle").feature_spec.visual_spec == V2_SPEC  # the live check passes
    result = Replayer(work / "bundle").replay(recording, ReplayOptions())
    model = result.assessment.model
    assert model.modalities == ["text", "audio", "video"] and model.training_data.startswith(title)
    assert result.session_indicators["head_motion"] > 0  # the panel still reads the face


def test_malformed_session_is_skipped_with_its_reason_or_stops_with_strict(tmp_path: Path) -> None:
    root = make_daic(tmp_path / "data")
    bad = root / "301_P" / "301_TRANSCRIPT.csv"
    bad.write_text(bad.read_text() + "12.0\tParticipant\tno stop time\n")
    cfg = load_run_config(
        "micro", ["corpus.kind=daic-woz", f"corpus.path={root}", f"workdir={tmp_path / 'w'}"]
    )
    corpus = load_corpus(cfg)
    skipped = [d for d in corpus.dropped if d["session_id"] == "301"]
    assert len(skipped) == 1 and "301_TRANSCRIPT.csv:" in skipped[0]["reason"]
    assert [s.session_id for s in corpus.split("train")] == ["300"]
    assert _train("daic-woz", root, tmp_path / "strict", "--strict") == 2
