"""VLLMBackend and the merged-model export.

Two layers:
1. protocol tests against a loopback HTTP server that answers in vLLM 0.32's recorded Completions format
   (fast; also covers retries, timeouts, 4xx, a dead port);
2. a REAL vLLM server (CPU build, ``.venv-vllm`` from ``scripts/setup_vllm.sh``; started by the package's
   launcher, ``vllm_plugin.serve.LocalServer`` with ``mode="embeds"``) serving a tiny Llama
   exported by ``merge.py`` from a tiny MLlmDR with LoRA: the backend's 8 items in one request give the
   same text as the embedded transformers backend on the unmerged model, and the same text as sending
   the token ids; a killed server gives ``BackendError``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file

from mllmdr_core.backends.base import ItemRequest, LLMBackend
from mllmdr_core.backends.merge import (
    EMBED_TABLE_NAME,
    MANIFEST_NAME,
    export_merged_llm,
    load_embed_table,
    load_serving_manifest,
)
from mllmdr_core.backends.transformers_backend import TransformersBackend
from mllmdr_core.backends.vllm_backend import VLLMBackend, VLLMSettings, encode_prompt_embeds
from mllmdr_core.backends.vllm_plugin.serve import LocalServer, free_port
from mllmdr_core.errors import BackendError, BundleError, ConfigError
from mllmdr_core.model.mllm import MLlmDR
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.phq8 import PHQ8_ITEMS
from mllmdr_core.testing import randomise_lora_b, tiny_corpus, vllm_tiny_config

REPO = Path(__file__).resolve().parents[3]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
MODEL_NAME = "mllmdr-tiny"
ITEM_KEYS = [item.key for item in PHQ8_ITEMS]


def _decode(b64: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(b64)), weights_only=True)


# ---------------------------------------------------------------------------------------------------
# 1. Recorded-format fake vLLM server (real HTTP on loopback)
# ---------------------------------------------------------------------------------------------------


class FakeVLLM:
    """Answers like vLLM 0.32 (recorded shapes); ``script`` lists status codes to answer first."""

    def __init__(self, hidden: int = 16, max_model_len: int = 1024) -> None:
        self.hidden = hidden
        self.max_model_len = max_model_len
        self.script: list[int] = []
        self.delay_s = 0.0
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []  # Authorization header of each POST
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": MODEL_NAME,
                                "object": "model",
                                "owned_by": "vllm",
                                "root": "/models/x",
                                "parent": None,
                                "max_model_len": fake.max_model_len,
                            }
                        ],
                    },
                )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                fake.auth.append(self.headers.get("Authorization"))
                time.sleep(fake.delay_s)
                if fake.script:
                    status = fake.script.pop(0)
                    self._send(
                        status,
                        {
                            "error": {
                                "message": f"scripted {status}",
                                "type": "X",
                                "param": None,
                                "code": status,
                            }
                        },
                    )
                    return
                tensors = [_decode(s) for s in body["prompt_embeds"]]
                if any(t.shape[1] != fake.hidden for t in tensors):
                    self._send(
                        400,
                        {
                            "error": {
                                "message": (
                                    f"`prompt_embeds` hidden_size {tensors[0].shape[1]} does not "
                                    f"match the model's hidden_size {fake.hidden}. "
                                    "(parameter=prompt_embeds)"
                                ),
                                "type": "BadRequestError",
                                "param": "prompt_embeds",
                                "code": 400,
                            }
                        },
                    )
                    return
                # Answer out of order (vLLM keeps order, but the client must not rely on list position).
                choices = [
                    {
                        "index": i,
                        "text": f" item {i} has {t.shape[0]} tokens",
                        "logprobs": None,
                        "finish_reason": "length",
                        "stop_reason": None,
                        "token_ids": list(range(3 + i)),
                        "prompt_logprobs": None,
                        "prompt_token_ids": [0] * t.shape[0],
                        "routed_experts": None,
                    }
                    for i, t in enumerate(tensors)
                ][::-1]
                self._send(
                    200,
                    {
                        "id": "cmpl-1",
                        "object": "text_completion",
                        "created": 1,
                        "model": MODEL_NAME,
                        "choices": choices,
                        "usage": {"prompt_tokens": 1, "total_tokens": 2, "completion_tokens": 1},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]  # client hung up (timeouts)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    srv = FakeVLLM()
    yield srv
    srv.close()


def _items(hidden: int = 16, lengths: tuple[int, ...] = (5, 9, 3, 7, 4, 6, 8, 2)) -> list[ItemRequest]:
    g = torch.Generator().manual_seed(0)
    return [
        ItemRequest(k, torch.randn(n, hidden, generator=g)) for k, n in zip(ITEM_KEYS, lengths, strict=True)
    ]


def test_eight_items_in_one_request_bf16_on_the_wire(fake: FakeVLLM) -> None:
    backend = VLLMBackend(fake.url, MODEL_NAME, hidden_size=16, max_tokens=12, suppress_token_ids=(3, 4))
    assert isinstance(backend, LLMBackend) and backend.name == "vllm"
    reqs = _items()
    outs = backend.generate(reqs)
    assert len(fake.bodies) == 1  # ONE batched request
    body = fake.bodies[0]
    assert body["model"] == MODEL_NAME and body["max_tokens"] == 12 and body["temperature"] == 0.0
    assert body["return_token_ids"] is True and body["logit_bias"] == {"3": -100.0, "4": -100.0}
    sent = [_decode(s) for s in body["prompt_embeds"]]
    for req, t in zip(reqs, sent, strict=True):
        assert t.dtype == torch.bfloat16 and t.shape == req.embeds.shape
        assert torch.equal(t, req.embeds.to(torch.bfloat16))
    assert [o.item_key for o in outs] == ITEM_KEYS
    for i, (req, out) in enumerate(zip(reqs, outs, strict=True)):
        assert out.text == f"item {i} has {req.embeds.shape[0]} tokens"  # mapped by index, stripped
        assert out.maa_score is None and out.prompt_tokens == req.embeds.shape[0]
        assert out.generated_tokens == 3 + i
    assert backend.stats.last_payload_bytes == len(json.dumps(body).encode())
    assert len(backend.stats.last_item_bytes) == 8
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.generate(reqs)


def test_payload_is_the_tensor_not_its_storage() -> None:
    big = torch.randn(1000, 16)
    view = big[:10]  # torch.save(view) would ship all 1000 rows
    naive = io.BytesIO()
    torch.save(view, naive)
    assert len(naive.getvalue()) > 1000 * 16 * 4  # the whole storage
    assert len(base64.b64decode(encode_prompt_embeds(view, torch.float32))) < 10 * 16 * 4 + 4000
    assert torch.equal(_decode(encode_prompt_embeds(view, torch.float32)), view)


def test_check_reports_model_and_limits_length(fake: FakeVLLM, request: pytest.FixtureRequest) -> None:
    fake.max_model_len = 20
    backend = VLLMBackend(fake.url, MODEL_NAME, hidden_size=16, max_tokens=12)
    request.addfinalizer(backend.close)
    served = backend.check()
    assert served.model_id == MODEL_NAME and served.max_model_len == 20
    with pytest.raises(BackendError, match="exceed the server's max_model_len 20"):
        backend.generate(_items())  # 9 + 12 > 20
    assert fake.bodies == []
    other = VLLMBackend(fake.url, "llama-3-8b", hidden_size=16)
    request.addfinalizer(other.close)
    with pytest.raises(BackendError, match=r"serves \['mllmdr-tiny'\], not 'llama-3-8b'"):
        other.check()


def test_hidden_size_mismatch_fails_locally_or_from_the_server(
    fake: FakeVLLM, request: pytest.FixtureRequest
) -> None:
    with (
        VLLMBackend(fake.url, MODEL_NAME, hidden_size=4096) as local,
        pytest.raises(BackendError, match="hidden size 16 but the served model expects 4096"),
    ):
        local.generate(_items())
    assert fake.bodies == []
    # Without a manifest the server's 400 comes back as a BackendError at once (no retries).
    backend = VLLMBackend(fake.url, MODEL_NAME, retries=3, backoff_s=0.01)
    request.addfinalizer(backend.close)
    with pytest.raises(BackendError, match=r"rejected the request \(400\): `prompt_embeds` hidden_size 32"):
        backend.generate(_items(hidden=32))
    assert len(fake.bodies) == 1 and backend.stats.retries == 0


def test_retries_with_backoff_on_503_then_succeeds(fake: FakeVLLM, request: pytest.FixtureRequest) -> None:
    fake.script = [503, 500]
    backend = VLLMBackend(fake.url, MODEL_NAME, retries=2, backoff_s=0.05)
    request.addfinalizer(backend.close)
    t0 = time.perf_counter()
    outs = backend.generate(_items())
    assert time.perf_counter() - t0 >= 0.05 + 0.1  # backoff 0.05 s then 0.1 s
    assert len(outs) == 8 and len(fake.bodies) == 3 and backend.stats.retries == 2
    fake.script = [503, 503, 503]
    with pytest.raises(BackendError, match=r"answered 503: scripted 503 after 3 attempt"):
        backend.generate(_items())


def test_timeout_and_dead_server_raise_backend_error(fake: FakeVLLM, request: pytest.FixtureRequest) -> None:
    fake.delay_s = 1.0
    slow = VLLMBackend(fake.url, MODEL_NAME, timeout_s=0.2, retries=1, backoff_s=0.01)
    request.addfinalizer(slow.close)
    with pytest.raises(BackendError, match="timed out"):
        slow.generate(_items())
    dead = VLLMBackend(f"http://127.0.0.1:{free_port()}", MODEL_NAME, retries=1, backoff_s=0.01)
    request.addfinalizer(dead.close)
    with pytest.raises(BackendError, match=r"unreachable \(ConnectError.*after 2 attempt"):
        dead.generate(_items())
    with pytest.raises(BackendError, match="unreachable"):
        dead.check()


# ---------------------------------------------------------------------------------------------------
# 2. Export (LoRA merged) and a REAL vLLM server
# ---------------------------------------------------------------------------------------------------

PROMPTS = [
    f'Rate PHQ-8 item "{item.title}". Audio: <AudioHere> Video: <VideoHere> Reply' for item in PHQ8_ITEMS
]


@pytest.fixture(scope="module")
def model() -> MLlmDR:
    """A tiny MLlmDR whose Llama vLLM's CPU attention supports (head_dim 32) and non-trivial LoRA."""
    cfg = vllm_tiny_config()
    tok = train_tokenizer(tiny_corpus(), vocab_size=600)
    torch.manual_seed(0)
    m = MLlmDR(cfg, 24, 12, tok).eval()
    randomise_lora_b(m.llm)
    return m


@pytest.fixture(scope="module")
def export_dir(model: MLlmDR, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_merged_llm(model.llm, model.tokenizer, tmp_path_factory.mktemp("vllm") / "merged")


def test_export_merges_lora_and_keeps_the_source_model(model: MLlmDR, export_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    manifest = load_serving_manifest(export_dir, verify=True)
    assert manifest.lora_merged and manifest.lora_target_modules == ("q_proj", "v_proj")
    assert (manifest.hidden_size, manifest.head_dim, manifest.vocab_size) == (64, 32, len(model.tokenizer))
    merged = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = model.tokenizer(PROMPTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model.llm(**ids).logits  # LoRA model, unmerged (the source is left intact)
        got = merged(**ids).logits
        base = model.llm.get_base_model()
        with model.llm.disable_adapter():
            no_lora = base(**ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert (want - no_lora).abs().max() > 1e-2  # the adapter matters, so the merge was tested
    table = load_embed_table(export_dir)
    assert torch.equal(table.weight, model.llm.get_input_embeddings().weight)
    assert set(load_file(str(export_dir / EMBED_TABLE_NAME))) == {"weight"}


def test_tampered_export_is_refused(export_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(export_dir, tmp_path / "copy"))
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("64", "65", 1))
    with pytest.raises(BundleError, match=r"sha256 of config\.json"):
        load_serving_manifest(copy, verify=True)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="not an mllmdr vLLM export"):
        load_serving_manifest(copy)


@pytest.fixture(scope="module")
def vllm_server(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real vLLM CPU server taking whole prompt embeddings (``mode="embeds"``) on a free port."""
    tmp = tmp_path_factory.mktemp("vllm-run")
    server = LocalServer(
        VLLM_PY, export_dir, tmp, source_root=REPO, served_model_name=MODEL_NAME, mode="embeds"
    )
    print(f"\n[vllm] server ready in {server.start_s:.1f} s")
    yield server
    server.stop()


@pytest.mark.slow
def test_real_vllm_matches_embedded_backend_and_token_ids(
    model: MLlmDR, export_dir: Path, vllm_server: LocalServer, request: pytest.FixtureRequest
) -> None:
    g = torch.Generator().manual_seed(2)
    audio, visual = torch.randn(1, 30, 24, generator=g), torch.randn(1, 10, 12, generator=g)
    with torch.no_grad():
        embeds = model.prompt_embeds(PROMPTS, audio, None, visual, None)  # 8 × (L_i, 64)
    reqs = [ItemRequest(k, e) for k, e in zip(ITEM_KEYS, embeds, strict=True)]
    assert all(r.embeds.shape[0] > 64 for r in reqs)  # 32 + 32 soft tokens spliced in

    backend = VLLMBackend.from_export(
        vllm_server.url, export_dir, MODEL_NAME, max_tokens=16, wire_dtype="float32",
        suppress_token_ids=(model.audio_token_id, model.video_token_id),
    )  # fmt: skip
    request.addfinalizer(backend.close)
    assert backend.check().max_model_len == 1024
    backend.generate(reqs)  # warm-up
    t0 = time.perf_counter()
    outs = backend.generate(reqs)
    latency = time.perf_counter() - t0
    embedded = TransformersBackend(model, max_new_tokens=16).generate(reqs)  # LoRA unmerged, in-process
    assert [o.text for o in outs] == [e.text for e in embedded]
    assert [o.generated_tokens for o in outs] == [e.generated_tokens for e in embedded]
    assert all(o.maa_score is None and o.generated_tokens > 0 for o in outs)
    per_item = sum(backend.stats.last_item_bytes) / 8
    print(
        f"[vllm] 8 items ({sum(r.embeds.shape[0] for r in reqs)} prompt tokens, fp32 wire): "
        f"{latency * 1000:.0f} ms; {per_item / 1024:.1f} KiB base64 per item"
    )

    # bf16 on the wire (the default): half the bytes, vLLM casts to the served dtype.
    bf16 = VLLMBackend.from_export(
        vllm_server.url,
        export_dir,
        MODEL_NAME,
        max_tokens=16,
        suppress_token_ids=(model.audio_token_id, model.video_token_id),
    )
    request.addfinalizer(bf16.close)
    outs16 = bf16.generate(reqs)
    assert sum(bf16.stats.last_item_bytes) < 0.6 * sum(backend.stats.last_item_bytes)
    assert len(outs16) == 8 and all(o.generated_tokens > 0 for o in outs16)
    print(
        f"[vllm] bf16 wire: {sum(bf16.stats.last_item_bytes) / 8 / 1024:.1f} KiB per item, "
        f"{bf16.stats.last_latency_s * 1000:.0f} ms"
    )

    # Embeddings of token ids (from the exported table) give the same text as the ids themselves.
    table = load_embed_table(export_dir)
    ids = [
        model.tokenizer(p.replace("<AudioHere>", "").replace("<VideoHere>", ""))["input_ids"] for p in PROMPTS
    ]
    by_embeds = backend.generate(
        [ItemRequest(k, table(torch.tensor(i))) for k, i in zip(ITEM_KEYS, ids, strict=True)]
    )
    by_ids = httpx.post(f"{vllm_server.url}/v1/completions", timeout=60, json={
        "model": MODEL_NAME, "prompt": ids, "max_tokens": 16, "temperature": 0.0,
        "logit_bias": {str(model.audio_token_id): -100, str(model.video_token_id): -100},
    }).json()["choices"]  # fmt: skip
    assert [o.text for o in by_embeds] == [
        c["text"].strip() for c in sorted(by_ids, key=lambda c: c["index"])
    ]

    # The real server's 400 for a wrong hidden size becomes a BackendError.
    unchecked = VLLMBackend(vllm_server.url, MODEL_NAME, retries=0)
    request.addfinalizer(unchecked.close)
    with pytest.raises(BackendError, match="hidden_size 32 does not match the model's hidden_size 64"):
        unchecked.generate([ItemRequest("sleep", torch.zeros(4, 32))])

    # Server gone → BackendError (after the retries), not a hang.
    vllm_server.stop()
    with (
        VLLMBackend(vllm_server.url, MODEL_NAME, retries=1, backoff_s=0.05) as gone,
        pytest.raises(BackendError, match="unreachable"),
    ):
        gone.generate(reqs)


def test_bf16_export_for_gpu_serving(model: MLlmDR, tmp_path: Path) -> None:
    out = export_merged_llm(model.llm, model.tokenizer, tmp_path / "bf16", dtype="bfloat16")
    manifest = load_serving_manifest(out, verify=True)
    assert manifest.dtype == "bfloat16"
    assert load_embed_table(out).weight.dtype == torch.bfloat16
    assert next(model.llm.parameters()).dtype == torch.float32  # the source model is untouched


def test_vllm_settings_build_honours_every_option(export_dir: Path, fake: FakeVLLM) -> None:
    placeholders = (7, 8)  # the bundle's <AudioHere>/<VideoHere> ids
    with VLLMSettings("http://vllm:8000/", "mllmdr", export=str(export_dir), max_tokens=64).build(
        max_new_tokens=24, placeholder_ids=placeholders
    ) as backend:
        assert (backend.base_url, backend.model_name, backend.hidden_size, backend.max_tokens) == (
            "http://vllm:8000",
            "mllmdr",
            64,
            64,
        )
        assert backend.suppress_token_ids == placeholders  # on by default, as the embedded backend does
    options = VLLMSettings(
        fake.url, MODEL_NAME, api_key="s3cret", timeout_s=7.0, connect_timeout_s=1.5, retries=3,
        backoff_s=0.01, wire_dtype="float32",
    )
    with options.build(max_new_tokens=24, placeholder_ids=placeholders) as backend:
        timeout = backend._http().timeout
        assert (timeout.read, timeout.connect, backend.retries, backend.backoff_s) == (7.0, 1.5, 3, 0.01)
        assert backend.hidden_size is None and backend.wire_dtype == torch.float32
        backend.generate(_items())
    body = fake.bodies[-1]
    assert body["max_tokens"] == 24  # unset: the bundle's llm.max_new_tokens
    assert body["logit_bias"] == {"7": -100.0, "8": -100.0}
    assert _decode(body["prompt_embeds"][0]).dtype == torch.float32 and fake.auth[-1] == "Bearer s3cret"
    off = VLLMSettings(fake.url, MODEL_NAME, max_tokens=5, suppress_placeholders=False)
    with off.build(max_new_tokens=24, placeholder_ids=placeholders) as backend:
        backend.generate(_items())
    assert fake.bodies[-1]["max_tokens"] == 5 and "logit_bias" not in fake.bodies[-1]
    assert fake.auth[-1] is None
    with pytest.raises(ConfigError, match="wire_dtype"):
        VLLMSettings(fake.url, MODEL_NAME, wire_dtype="int8").build(max_new_tokens=24, placeholder_ids=())
