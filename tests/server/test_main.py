"""``mllmdr-server`` start-up: which model bundle it serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mllmdr_core.errors import MllmdrError
from stream_server.__main__ import resolve_bundle
from stream_server.settings import Settings


def test_resolve_bundle_prefers_demo_then_reuses_the_tiny_fallback(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = Settings(demo=True, var_dir=str(tmp_path / "var"))
    assert resolve_bundle(Settings(bundle_path="/x/b")) == Path("/x/b")
    with pytest.raises(MllmdrError, match="no model bundle"):
        resolve_bundle(Settings(var_dir=str(tmp_path / "var")))

    # an already-built tiny fallback (it holds bundle.json) is used as is, not rebuilt
    tiny = tmp_path / "var" / "tiny-random-bundle"
    shutil.copytree(tiny_bundle, tiny)
    stamp = (tiny / "bundle.json").stat().st_mtime_ns
    assert resolve_bundle(demo) == tiny
    assert (tiny / "bundle.json").stat().st_mtime_ns == stamp
    assert "TINY RANDOM-INIT" not in capsys.readouterr().out

    # a trained bundles/demo/ (bundle.json) wins over the fallback
    shutil.copytree(tiny_bundle, tmp_path / "bundles" / "demo")
    assert resolve_bundle(demo) == Path("bundles/demo")
    assert resolve_bundle(Settings(var_dir=str(tmp_path / "var"))) == Path("bundles/demo")

    # a directory without a manifest is not a bundle
    (tmp_path / "bundles" / "demo" / "bundle.json").unlink()
    assert resolve_bundle(demo) == tiny


def test_a_short_jwt_secret_stops_start_up_before_the_bundle_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stream_server.__main__ as entry

    served: list[Settings] = []

    async def serve(settings: Settings) -> None:  # what would load the bundle
        served.append(settings)

    monkeypatch.setattr(entry, "serve", serve)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLLMDR_JWT_SECRET", "too-short")
    assert entry.main(["--demo"]) == 2
    err = capsys.readouterr().err
    assert "config_invalid" in err and "MLLMDR_JWT_SECRET must be at least 16 characters" in err
    assert "too-short" not in err  # the secret itself is not echoed
    assert served == [] and not (tmp_path / "var").exists()
    monkeypatch.setenv("MLLMDR_JWT_SECRET", "x" * 16)
    assert entry.main(["--demo"]) == 0 and len(served) == 1


def test_demo_mode_keeps_its_key_and_secret_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stream_server.__main__ as entry
    from stream_server.auth import TokenIssuer
    from stream_server.demo_secrets import DEMO_SECRETS_FILE, with_demo_secrets

    served: list[Settings] = []

    async def serve(settings: Settings) -> None:
        served.append(settings)

    monkeypatch.setattr(entry, "serve", serve)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLLMDR_JWT_SECRET", raising=False)
    monkeypatch.delenv("MLLMDR_API_KEY", raising=False)
    assert entry.main(["--demo"]) == 0 and entry.main(["--demo"]) == 0
    first, second = served
    assert first.api_key and first.api_key.startswith("demo-") and first.jwt_secret
    assert (second.api_key, second.jwt_secret) == (first.api_key, first.jwt_secret)
    stored = tmp_path / "var" / DEMO_SECRETS_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text()) == {"api_key": first.api_key, "jwt_secret": first.jwt_secret}
    # a token minted before the restart verifies after it
    token, _ = TokenIssuer(first.jwt_secret, first.api_key).mint("s_1", "clinician", 60)
    assert TokenIssuer(second.jwt_secret or "", second.api_key).verify(token, "s_1", ("clinician",)).role == (
        "clinician"
    )
    # configured values win and are not written; loose permissions are tightened; not demo: untouched
    stored.chmod(0o644)
    mine = with_demo_secrets(Settings(demo=True, var_dir=str(tmp_path / "var"), api_key="my-key"))
    assert mine.api_key == "my-key" and mine.jwt_secret == first.jwt_secret
    assert stored.stat().st_mode & 0o777 == 0o600 and "my-key" not in stored.read_text()
    plain = Settings(var_dir=str(tmp_path / "other"))
    assert with_demo_secrets(plain) is plain and not (tmp_path / "other").exists()
    stored.write_text("not json")
    with pytest.raises(MllmdrError, match="delete it"):
        with_demo_secrets(Settings(demo=True, var_dir=str(tmp_path / "var")))


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_server_sets_passive_openmp_unless_set(given: str | None, expected: str) -> None:
    """``main`` sets OMP_WAIT_POLICY before torch loads (idle OpenMP threads sleep); the user's wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys\nfrom stream_server.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split()[-2:] == ["False", expected]
