"""``mllmdr-server`` start-up: which model bundle it serves."""

from __future__ import annotations

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
