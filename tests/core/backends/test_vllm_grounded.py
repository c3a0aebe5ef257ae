"""Grounded decoding (issue 18) on a REAL vLLM server (CPU build, ``.venv-vllm``).

The plugin server of a tiny bundle's export (head_dim 32: vLLM's CPU attention rejects the demo
bundle's 24), launched with the grounded-decoding logits processor (``LocalServer(grounded=True)``):
the client's probe passes and the greedy text equals the embedded backend's with the option on. The
random tiny model never writes the reason marker, so this checks the wiring; what the processor
decides is checked in the vLLM environment by :func:`test_processor_in_vllm_decides_as_the_core`
(vLLM's own ``SamplingParams`` and adapter, the demo tokenizer, logits that favour a misquote).
A server without the processor fails the probe: ``tests/core/backends/test_vllm_native.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.assess import Assessor
from mllmdr_core.backends.merge import export_merged_llm
from mllmdr_core.backends.vllm_backend import VLLMSettings
from mllmdr_core.backends.vllm_native import VLLMNativeBackend
from mllmdr_core.backends.vllm_plugin.serve import LocalServer
from mllmdr_core.bundle import LoadedBundle, load_bundle
from mllmdr_core.errors import UnsupportedDecodingError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.snapshot import SessionSnapshot
from mllmdr_core.testing import build_tiny_bundle, randomise_lora_b, vllm_tiny_config

REPO = Path(__file__).resolve().parents[3]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
MODEL_NAME = "mllmdr-tiny-grounded"


def _grounded(bundle: LoadedBundle, on: bool = True) -> LoadedBundle:
    config = copy.deepcopy(bundle.config)
    config.assess.grounded_decoding = on
    config.llm.max_new_tokens = 16
    return dataclasses.replace(bundle, config=config)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = vllm_tiny_config()
    return build_tiny_bundle(tmp_path_factory.mktemp("grounded") / "bundle", config=cfg)


@pytest.fixture(scope="module")
def full(bundle_path: Path) -> LoadedBundle:
    bundle = load_bundle(bundle_path)
    randomise_lora_b(bundle.model.llm)
    return _grounded(bundle)


@pytest.fixture(scope="module")
def server(full: LoadedBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    if not VLLM_PY.exists():
        raise RuntimeError(f"{VLLM_PY} missing: run scripts/setup_vllm.sh (make test does)")
    model = full.model
    export = export_merged_llm(
        model.llm,
        full.tokenizer,
        tmp_path_factory.mktemp("grounded-export") / "merged",
        plugin_soft_tokens=full.config.lqformer.num_queries,
        maa_head=model.maa,
        soft_token_projections={"audio": model.audio_lqformer.proj, "video": model.visual_lqformer.proj},
    )
    srv = LocalServer(
        VLLM_PY, export, tmp_path_factory.mktemp("grounded-run"), source_root=REPO,
        served_model_name=MODEL_NAME, grounded=True,
    )  # fmt: skip
    print(f"\n[vllm-grounded] plugin server ready in {srv.start_s:.1f} s")
    yield srv
    srv.stop()


@pytest.mark.slow
def test_grounded_plugin_equals_embedded(
    full: LoadedBundle, bundle_path: Path, server: LocalServer, request: pytest.FixtureRequest
) -> None:
    assert "vllm_plugin.grounded:GroundedLogitsProcessor" in server.log.read_text()  # registered
    light = _grounded(load_bundle(bundle_path, llm_weights=False))
    backend = VLLMNativeBackend.from_bundle(server.url, light, MODEL_NAME)
    request.addfinalizer(backend.close)
    assert backend.grounded and backend.max_tokens == 16
    rng = np.random.default_rng(0)
    snap = SessionSnapshot.of(
        audio=rng.standard_normal((300, full.model.audio_dim)).astype(np.float32),
        visual=rng.standard_normal((300, full.model.visual_dim)).astype(np.float32),
        transcript=[
            TranscriptLine(1.0, 3.0, "clinician", "How easy is it for you to get a good night's sleep?"),
            TranscriptLine(3.5, 5.5, "patient", "Not easy, I wake up at three every night."),
        ],
        window=(0.0, 60.0),
    )
    remote = Assessor(light, backend).assess(snap, session_id="g", kind="checkpoint")
    local = Assessor(full).assess(snap, session_id="g", kind="checkpoint")
    assert backend._grounded_checked  # the probe passed: the server forces tokens on request
    assert [it.raw_text for it in remote.items] == [it.raw_text for it in local.items]
    assert all(it.raw_text for it in remote.items)


PROCESSOR_CHECK = r"""
import json, sys, types
import torch
from transformers import AutoTokenizer
from vllm import SamplingParams
from mllmdr_core.backends.vllm_plugin.grounded import GroundedLogitsProcessor
from mllmdr_core.grounded_decoding import GroundedDecoder

args = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(args["tokenizer"])
config = types.SimpleNamespace(model_config=types.SimpleNamespace(tokenizer=args["tokenizer"]))
proc = GroundedLogitsProcessor(config, torch.device("cpu"), False)
assert not proc.is_argmax_invariant()
assert proc.new_req_logits_processor(SamplingParams(temperature=0.0)) is None  # not asked: free
params = SamplingParams(temperature=0.0, extra_args={"mllmdr_grounded": 1})
step = proc.new_req_logits_processor(params)
prompt_ids = [tok.bos_token_id, *tok(args["prompt"], add_special_tokens=False)["input_ids"]]
out = tok(args["head"], add_special_tokens=False)["input_ids"]
favoured = tok(args["favoured"], add_special_tokens=False)["input_ids"]
dec = GroundedDecoder(proc._grounding_vocab(), args["prompt"])
g = torch.Generator().manual_seed(0)
for _ in range(48):
    logits = torch.randn(len(tok), generator=g)
    logits[favoured] += 6.0
    want = dec.pick(list(out), logits.argsort(descending=True).tolist())
    new = step(prompt_ids, out, logits.clone())
    assert int(new.argmax()) == want and torch.isinf(new).sum() == len(tok) - 1
    if want == tok.eos_token_id:
        break
    out.append(want)
print(json.dumps({"text": tok.decode(out, skip_special_tokens=True)}))
"""


def test_processor_in_vllm_decides_as_the_core(tmp_path: Path) -> None:
    from mllmdr_core.grounding import check, numbers, quoted_spans
    from mllmdr_core.prompt import parse_output

    if not VLLM_PY.exists():
        raise RuntimeError(f"{VLLM_PY} missing: run scripts/setup_vllm.sh (make test does)")
    prompt = "\n".join(
        [
            'Rate PHQ-8 item "Sleep": trouble falling or staying asleep.',
            "Q: How easy is it for you to get a good night's sleep?",
            "A: Not easy, I wake up at three every night.",
            'Reply "Evaluation Result: N. Evaluation Reason: ..."',
        ]
    )
    args = {
        "tokenizer": str(REPO / "bundles" / "demo" / "tokenizer"),
        "prompt": prompt,
        "head": 'Evaluation Result: 2. Evaluation Reason: The participant said "Not',
        "favoured": " sleep well 8 hours every night\"",
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(VLLM_PY), "-c", PROCESSOR_CHECK, json.dumps(args)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = json.loads(done.stdout.strip().splitlines()[-1])["text"]
    parsed = parse_output(text)
    assert numbers(parsed.reason) <= {2.0, 3.0}  # the item score and "three"; never the favoured 8
    assert quoted_spans(parsed.reason) and all("well" not in q for q in quoted_spans(parsed.reason))
    assert check(parsed.reason, prompt, parsed.score).score == 1.0


def test_embeds_mode_refuses_a_grounded_bundle(full: LoadedBundle) -> None:
    assert full.config.assess.grounded_decoding
    with pytest.raises(UnsupportedDecodingError, match="grounded_decoding"):
        VLLMSettings(url="http://127.0.0.1:9", model="m").for_bundle(full)
    assert _grounded(full, on=False).config.assess.grounded_decoding is False
