"""The Python SDK's publish / watch path without the model stack (``pip install mllmdr-live``, no extras).

The SDK runs in a subprocess whose import system refuses every package of the ``model`` extra (torch,
transformers, mediapipe, …) and of the server: it imports the SDK's entry points, publishes a real
recording to a real server (in this process, with the full install) and watches the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from client_sdk.synth import SyntheticRecording
from mllmdr_core.assessment import Assessment

from .server_fixture import API_KEY, sdk_settings, threaded_server

ROOT = Path(__file__).resolve().parents[2]
# import names of the distributions outside the base install (the model, server and train extras)
BLOCKED = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "safetensors": "safetensors",
    "tokenizers": "tokenizers",
    "webrtcvad-wheels": "webrtcvad",
    "mediapipe": "mediapipe",
    "praat-parselmouth": "parselmouth",
    "pocketsphinx": "pocketsphinx",
    "scipy": "scipy",
    "scikit-image": "skimage",
    "tqdm": "tqdm",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "sqlalchemy": "sqlalchemy",
    "aiosqlite": "aiosqlite",
    "asyncpg": "asyncpg",
    "pyjwt": "jwt",
    "matplotlib": "matplotlib",
    "pyyaml": "yaml",
}
PRELUDE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = set(json.loads(sys.argv[1]))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.partition(".")[0] in BLOCKED:
                raise ImportError(f"{fullname} is not in the light install")
            return None

    sys.meta_path.insert(0, Refuse())
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch refused", file=sys.stderr)
    """
)


def _run_light(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), json.dumps(sorted(BLOCKED.values())), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
    )


def test_base_dependencies_are_light() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {Requirement(r).name.lower() for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    model = {Requirement(r).name.lower() for r in extras["model"]}
    assert base == {"numpy", "pydantic", "httpx", "websockets", "aiortc", "av"}
    assert not base & set(BLOCKED)
    assert {"torch", "transformers", "peft", "mediapipe", "scipy", "scikit-image", "tqdm"} <= model
    for extra in ("server", "train"):  # what scripts/setup.sh installs still brings the models
        assert "mllmdr-live[model]" in extras[extra], extra


def test_sdk_entry_points_import_without_the_model_stack() -> None:
    done = _run_light(
        """
        import client_sdk, client_sdk.cli, client_sdk.publisher, client_sdk.session, client_sdk.sync
        from client_sdk import Session, SyncSession, ServerUnavailable, read_transcript
        from stream_server.protocol import parse_server_event, WsClose
        heavy = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        print(json.dumps(heavy))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "torch refused" in done.stderr  # the import hook is in force
    assert json.loads(done.stdout) == []


def test_publish_and_watch_without_the_model_stack(
    tmp_path: Path, engine: Any, recording: SyntheticRecording
) -> None:
    assert recording.video is not None
    out = tmp_path / "final.json"
    cli = "from client_sdk.cli import main; sys.exit(main(sys.argv[2:]))"
    with threaded_server(sdk_settings(tmp_path), engine) as url:
        common = ["--server", url, "--api-key", API_KEY]
        files = [str(recording.video), "--transcript", str(recording.transcript), "--out", str(out)]
        publish = _run_light(cli, "publish", *files, *common)
        assert publish.returncode == 0, publish.stderr
        assert "torch refused" in publish.stderr
        final = Assessment.model_validate_json(out.read_text())
        watch = _run_light(cli, "watch", final.session_id, "--json", *common)
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.created" and kinds[-1] == "session.closed"
    assert kinds.count("transcript") >= len(recording.lines)
    result = next(e for e in events if e["type"] == "assessment.result")
    assert Assessment.model_validate(result["assessment"]) == final
