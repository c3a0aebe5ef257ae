"""The one vLLM launcher (``vllm_plugin/serve.py``) without starting vLLM: flags per mode, the CLI's
argument split, the source-tree entry point; the real servers it starts are in test_vllm_backend.py
(``mode="embeds"``) and test_vllm_native.py (``plugin`` / ``maa``)."""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mllmdr_core.backends.vllm_plugin import MAA_ARCHITECTURE, serve


def _cmd(**kwargs: object) -> list[str]:
    return serve.server_command("py", "/m", port=8001, served_model_name="x", **kwargs)  # type: ignore[arg-type]


def test_flags_differ_only_by_mode_and_quick_start() -> None:
    plugin, maa, embeds = (_cmd(mode=m) for m in serve.SERVE_MODES)
    common = [
        "py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name", "x",
        "--dtype", "float32", "--max-model-len", "1024", "--host", "127.0.0.1", "--port", "8001",
    ]  # fmt: skip
    mm = ["--enable-mm-embeds", "--limit-mm-per-prompt", '{"audio": 1, "video": 1}']
    # the generation server caches shared prefixes in 32-token blocks (assess.shared_prefix_prompts)
    assert plugin == [*common, *mm, "--enable-prefix-caching", "--block-size", "32"]
    assert _cmd(mode="plugin", prefix_block_size=None) == [*common, *mm]
    assert maa[: len(common) + len(mm)] == [*common, *mm] and "--enable-prefix-caching" not in maa
    hf = json.loads(maa[maa.index("--hf-overrides") + 1])
    assert hf == {"architectures": [MAA_ARCHITECTURE]} and maa[maa.index("--runner") + 1] == "pooling"
    assert "--no-enable-prefix-caching" in maa and maa[-1] == str(1024 * 8)  # 8 items of max length
    assert embeds == [*common, "--enable-prompt-embeds", "--no-enable-prefix-caching"]
    quick = _cmd(mode="embeds", quick_start=True, extra=["--seed", "3"])
    assert quick == [*embeds, *serve.QUICK_START_ARGS, "--seed", "3"]
    with pytest.raises(ValueError, match="mode must be one of"):
        _cmd(mode="lora")
    # grounded decoding (issue 18): the plugin server registers the logits processor, nothing else changes
    grounded = _cmd(mode="plugin", grounded=True)
    assert grounded == [*plugin, "--logits-processors", serve.GROUNDED_PROCESSOR]
    with pytest.raises(ValueError, match="plugin mode only"):
        _cmd(mode="embeds", grounded=True)


def test_cli_arguments_split_at_double_dash() -> None:
    args = serve.parse_args(
        ["/models/e", "--mode=maa", "--port", "9000", "--", "--gpu-memory-utilization=0.3"]
    )
    assert (args.model_dir, args.mode, args.port, args.extra) == (
        "/models/e", "maa", 9000, ["--gpu-memory-utilization=0.3"],
    )  # fmt: skip
    cmd = serve.launch_command(args, "python3")
    assert cmd[-1] == "--gpu-memory-utilization=0.3" and cmd[cmd.index("--dtype") + 1] == "bfloat16"
    assert serve.parse_args(["/m"]).extra == [] and serve.parse_args(["/m"]).host == "0.0.0.0"
    grounded = serve.launch_command(serve.parse_args(["/m", "--grounded-decoding"]), "python3")
    assert grounded[-2:] == ["--logits-processors", serve.GROUNDED_PROCESSOR]
    with pytest.raises(SystemExit):
        serve.parse_args(["/m", "--mode", "lora"])


def test_entry_point_from_a_source_tree_is_what_importlib_finds(tmp_path: Path) -> None:
    root = serve.write_entry_point(tmp_path)
    env = serve.server_env({"PYTHONPATH": "/other"}, source_root="/src", entry_point_dir=root, cache_dir="/c")
    assert env["PYTHONPATH"] == f"/src:{root}:/other" and env["HF_HUB_OFFLINE"] == "1"
    sys.path.insert(0, str(root))
    try:
        found = [e for e in entry_points(group=serve.ENTRY_POINT_GROUP) if e.name == "mllmdr"]
    finally:
        sys.path.remove(str(root))
    assert found and found[0].value == "mllmdr_core.backends.vllm_plugin:register"


def test_local_server_without_vllm_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no-python missing: run scripts/setup_vllm\.sh"):
        serve.LocalServer(
            tmp_path / "no-python", tmp_path, tmp_path, source_root=tmp_path, served_model_name="x"
        )
    assert not (tmp_path / "server.log").exists()
