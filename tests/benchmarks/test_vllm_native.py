"""``bench/vllm_native.py``'s GPU-mode code path (``run``) on a CPU: the tiny shape, 1 and 2 concurrent
sessions, embedded transformers vs the plugin on the real vLLM CPU servers (``.venv-vllm``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # the bench's own imports (common, stream_rss)

from bench import make_table  # noqa: E402
from bench.vllm_native import run  # noqa: E402
from mllmdr_core.phq8 import ITEM_KEYS  # noqa: E402


def test_the_gpu_path_on_a_cpu_with_the_tiny_shape(tmp_path: Path) -> None:
    result = run("tiny", (1, 2), "cpu", work=tmp_path)
    assert result["mode"] == "tiny" and result["device"] == "cpu" and result["sessions"] == [1, 2]
    for side in ("embedded", "plugin"):
        for n in ("1", "2"):
            fig = result[side][n]
            assert 0 < fig["p50_s"] <= fig["p95_s"] <= fig["wall_s"] + 1e-3, (side, n, fig)
            # random weights: the answers may end early, but every item generates something
            assert len(ITEM_KEYS) * int(n) <= fig["generated_tokens"] <= len(ITEM_KEYS) * int(n) * 16
            assert fig["gen_tokens_per_s"] > 0 and fig["assessments_per_s"] > 0
            # the backend call is part of each assessment: its percentiles cannot exceed the latency's
            assert 0 < fig["llm_stage_p50_s"] <= fig["p50_s"] + 1e-3
            assert fig["llm_stage_p95_s"] <= fig["p95_s"] + 1e-3 and fig["stream_side_ms_p50"] > 0
    # the same fields as --tiny, from the plugin: text and MAA as the embedded backend's
    assert result["text_equal"] is True and result["text_equal_shared_prefix"] is True
    assert result["maa_from_server"] is True and result["maa_max_abs_diff"] < 1e-4
    assert result["stream_llm_params"] == 0 and result["embedded_llm_params"] > 0
    detail = result["payload_bytes_per_assessment_d4096_detail"]
    assert result["payload_bytes_per_assessment_d4096"] == detail["server_projection"]
    assert detail["server_projection"] < detail["soft_tokens_shared"] < detail["soft_tokens_per_item"]
    assert detail["soft_tokens_per_item"] < detail["prompt_embeds"]
    prefill = result["prefill_tokens_per_assessment"]
    assert 0 < prefill["shared_prefix"] < prefill["per_item"] <= prefill["detail"]["per_item"]["prompt"]
    targets = result["targets"]
    assert targets["payload_le_1MiB_d4096"] == {
        "value": detail["server_projection"],
        "met": detail["server_projection"] <= 2**20,
    }
    assert targets["payload_le_1MiB_d4096"]["met"] is True
    assert targets["p95_le_1.5s_at_8_sessions"] == {"value": None, "met": None}  # no 8 sessions here
    ratio = targets["throughput_ge_5x_embedded_at_2_sessions"]
    expected = result["plugin"]["2"]["gen_tokens_per_s"] / result["embedded"]["2"]["gen_tokens_per_s"]
    assert ratio["value"] == round(expected, 2) and ratio["met"] == (expected >= 5.0)
    # the table row a GPU run's result file will get (bench/make_table.py)
    (row,) = make_table.vllm_native_gpu(result)
    assert row.label == "vllm_native (tiny)" and row.met is (False if not ratio["met"] else None)
    assert f"2 sessions: embedded p50 {result['embedded']['2']['p50_s']} / p95" in row.figures
    assert (
        f"plugin p50 {result['plugin']['2']['p50_s']} / p95 {result['plugin']['2']['p95_s']} s" in row.figures
    )


def test_embedded_only_needs_no_vllm(tmp_path: Path) -> None:
    """``--embedded-only`` (a GPU without vLLM): the embedded figures and the payload, no server."""
    result = run("tiny", (1,), "cpu", embedded_only=True, vllm_python=tmp_path / "no-python", work=tmp_path)
    assert "plugin" not in result and "text_equal" not in result and "server_start_s" not in result
    assert result["embedded"]["1"]["generated_tokens"] >= len(ITEM_KEYS)
    assert result["stream_llm_params"] == 0
    assert result["targets"]["payload_le_1MiB_d4096"]["met"] is True
    assert result["targets"]["p95_le_1.5s_at_8_sessions"]["met"] is None
    assert result["targets"]["throughput_ge_5x_embedded_at_1_sessions"] == {"value": None, "met": None}
    assert not (tmp_path / "export").exists()  # nothing exported for vLLM
    (row,) = make_table.vllm_native_gpu(result)
    assert "(plugin not run: --embedded-only)" in row.figures and row.met is None
