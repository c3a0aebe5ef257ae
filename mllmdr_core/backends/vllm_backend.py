"""LLM backend that sends spliced prompt embeddings to a vLLM OpenAI-compatible server.

The stream server keeps the bundle's LQ-former and embedding table and builds each item's prompt
embeddings locally (text embeddings with the 32 + 32 soft tokens spliced in, shape (L, d)); this backend
posts all 8 items in ONE ``POST /v1/completions`` request with ``prompt_embeds`` = a list of base64
``torch.save`` payloads, greedy decoding, and maps the choices back by index.

The vLLM server must be started with ``--enable-prompt-embeds`` on a model exported by
:mod:`mllmdr_core.backends.merge` (LoRA merged into the weights; ``--enable-lora`` with prompt embeds
crashes vLLM) and without prefix caching; see ``deploy/vllm/``. The MAA regression head runs only in the
embedded transformers backend, so ``ItemOutput.maa_score`` is ``None`` here (vLLM returns text, not the
last hidden states the head needs); the assessment then relies on the parsed item scores.

Wire cost: one item of L tokens costs ``L·d·2`` bytes in bf16 (``wire_dtype``, the default; vLLM casts
to the served dtype) plus a third for base64, e.g. ≈ 11 MiB for 1,064 tokens at d = 4096.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import torch

from mllmdr_core.backends.base import ItemOutput, ItemRequest
from mllmdr_core.errors import BackendError, ConfigError, UnsupportedDecodingError

if TYPE_CHECKING:
    from mllmdr_core.bundle import LoadedBundle

_WIRE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def encode_prompt_embeds(embeds: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> str:
    """(L, d) tensor → base64 of ``torch.save`` as vLLM's ``prompt_embeds`` expects.

    The tensor is cloned contiguous first: ``torch.save`` of a view would ship its whole storage.
    """
    if embeds.dim() != 2:
        raise BackendError(f"prompt embeds must be (L, d), got shape {tuple(embeds.shape)}")
    buf = io.BytesIO()
    torch.save(embeds.detach().to("cpu", dtype).contiguous().clone(), buf)  # (L, d)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class VLLMStats:
    """Counters of the last and all requests (for metrics and the sizing table)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    last_payload_bytes: int = 0  # JSON body of the last request
    last_item_bytes: list[int] = field(default_factory=list)  # base64 chars per item
    last_latency_s: float = 0.0


@dataclass(frozen=True)
class ServedModel:
    """What ``GET /v1/models`` says about the served model."""

    model_id: str
    max_model_len: int | None


class VLLMBackend:
    """``LLMBackend`` over a vLLM server's Completions API with prompt embeddings.

    ``hidden_size`` (from the export manifest) lets a mismatch fail locally with a clear message;
    ``suppress_token_ids`` (the ``<AudioHere>``/``<VideoHere>`` ids) get a −100 logit bias;
    ``timeout_s`` bounds one HTTP attempt; ``retries`` more attempts follow connection errors, timeouts
    and 408/429/5xx answers, with exponential backoff from ``backoff_s``. Other 4xx answers (bad input,
    unknown model) raise ``BackendError`` at once. Blocking: call from a worker thread, not the loop.
    """

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        *,
        hidden_size: int | None = None,
        max_tokens: int = 96,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        wire_dtype: str = "bfloat16",
        suppress_token_ids: tuple[int, ...] = (),
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if wire_dtype not in _WIRE_DTYPES:
            raise ConfigError(f"wire_dtype {wire_dtype!r} not one of {sorted(_WIRE_DTYPES)}")
        if retries < 0 or max_tokens < 1 or timeout_s <= 0:
            raise ConfigError("VLLMBackend needs retries >= 0, max_tokens >= 1 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.hidden_size = hidden_size
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_s = backoff_s
        self.wire_dtype = _WIRE_DTYPES[wire_dtype]
        self.suppress_token_ids = tuple(suppress_token_ids)
        self.stats = VLLMStats()
        self._max_model_len: int | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.Client | None = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            headers=headers,
            transport=transport,
        )

    @classmethod
    def from_export(
        cls, base_url: str, export_dir: str | Path, model_name: str, **kwargs: Any
    ) -> VLLMBackend:
        """Build for a model exported by ``merge.export_merged_llm`` (takes its hidden size)."""
        from mllmdr_core.backends.merge import load_serving_manifest

        manifest = load_serving_manifest(export_dir)
        return cls(base_url, model_name, hidden_size=manifest.hidden_size, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            raise BackendError("vLLM backend is closed")
        return self._client

    # -- requests --------------------------------------------------------------------------------

    def check(self) -> ServedModel:
        """``GET /v1/models``: the server is up and serves ``model_name`` (else ``BackendError``)."""
        body = self._request("GET", "/v1/models", None)
        data = body.get("data")
        if not isinstance(data, list):
            raise BackendError(f"vLLM at {self.base_url}: /v1/models answered without a model list")
        for entry in data:
            if isinstance(entry, dict) and entry.get("id") == self.model_name:
                mml = entry.get("max_model_len")
                self._max_model_len = int(mml) if isinstance(mml, int) else None
                return ServedModel(self.model_name, self._max_model_len)
        served = [e.get("id") for e in data if isinstance(e, dict)]
        raise BackendError(
            f"vLLM at {self.base_url} serves {served}, not {self.model_name!r} "
            "(check --served-model-name and the backend's model name)"
        )

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]:
        """All items in one Completions request, greedy; outputs in request order."""
        if not requests:
            return []
        self._validate(requests)
        items = [encode_prompt_embeds(r.embeds, self.wire_dtype) for r in requests]
        payload: dict[str, Any] = {
            "model": self.model_name,
            "prompt_embeds": items,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if self.suppress_token_ids:  # e.g. the modality placeholders, as the embedded backend does
            payload["logit_bias"] = {str(t): -100.0 for t in self.suppress_token_ids}
        self.stats.last_item_bytes = [len(s) for s in items]
        t0 = time.perf_counter()
        body = self._request("POST", "/v1/completions", payload)
        self.stats.last_latency_s = time.perf_counter() - t0
        return self._parse(body, requests)

    def _validate(self, requests: list[ItemRequest]) -> None:
        for r in requests:
            if r.embeds.dim() != 2 or r.embeds.shape[0] == 0:
                raise BackendError(f"item {r.item_key}: prompt embeds must be non-empty (L, d)")
            d = int(r.embeds.shape[1])
            if self.hidden_size is not None and d != self.hidden_size:
                raise BackendError(
                    f"item {r.item_key}: prompt embeds have hidden size {d} but the served model "
                    f"expects {self.hidden_size} (bundle and vLLM model do not match)"
                )
            if self._max_model_len is not None and r.embeds.shape[0] + self.max_tokens > self._max_model_len:
                raise BackendError(
                    f"item {r.item_key}: {r.embeds.shape[0]} prompt tokens + {self.max_tokens} new tokens "
                    f"exceed the server's max_model_len {self._max_model_len}"
                )

    def _parse(self, body: dict[str, Any], requests: list[ItemRequest]) -> list[ItemOutput]:
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != len(requests):
            got = len(choices) if isinstance(choices, list) else "no"
            raise BackendError(f"vLLM answered {got} choices for {len(requests)} prompts")
        by_index: dict[int, dict[str, Any]] = {}
        for c in choices:
            if not isinstance(c, dict) or not isinstance(c.get("index"), int) or "text" not in c:
                raise BackendError(f"vLLM answered a malformed choice: {str(c)[:200]}")
            by_index[c["index"]] = c
        if sorted(by_index) != list(range(len(requests))):
            raise BackendError(f"vLLM choice indices {sorted(by_index)} do not match {len(requests)} prompts")
        out = []
        for i, r in enumerate(requests):
            c = by_index[i]
            token_ids = c.get("token_ids")
            generated = len(token_ids) if isinstance(token_ids, list) else 0
            out.append(
                ItemOutput(
                    item_key=r.item_key,
                    text=str(c["text"]).strip(),
                    maa_score=None,  # MAA head needs hidden states: embedded backend only
                    prompt_tokens=int(r.embeds.shape[0]),
                    generated_tokens=generated,
                )
            )
        return out

    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        """One call with retries; returns the JSON object or raises ``BackendError``."""
        client = self._http()
        url = f"{self.base_url}{path}"
        content = None
        if payload is not None:
            content = json.dumps(payload).encode()
            self.stats.last_payload_bytes = len(content)
        self.stats.requests += 1
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = client.request(
                    method, path, content=content, headers={"Content-Type": "application/json"}
                )
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                last = f"unreachable ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"answered {resp.status_code}: {_error_message(resp)}"
                continue
            if resp.status_code >= 400:
                self.stats.failures += 1
                raise BackendError(
                    f"vLLM at {url} rejected the request ({resp.status_code}): {_error_message(resp)}"
                )
            try:
                body = resp.json()
            except ValueError as exc:
                self.stats.failures += 1
                raise BackendError(f"vLLM at {url} answered non-JSON: {resp.text[:200]!r}") from exc
            if not isinstance(body, dict):
                self.stats.failures += 1
                raise BackendError(f"vLLM at {url} answered {type(body).__name__}, expected an object")
            return body
        self.stats.failures += 1
        raise BackendError(f"vLLM at {url} {last} after {self.retries + 1} attempt(s)")


def _error_message(resp: httpx.Response) -> str:
    """The OpenAI-style ``error.message`` of an answer, else the start of its body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return resp.text[:300]


def require_free_decoding(bundle: LoadedBundle) -> None:
    """Raise :class:`UnsupportedDecodingError` for a bundle with ``assess.grounded_decoding``: this
    backend (whole prompt embeddings, no prompt token ids on the server) does not constrain decoding
    (issue 18), and free decoding in its place would show a clinician the ungrounded quotes and numbers
    the option exists to prevent."""
    if bundle.config.assess.grounded_decoding:
        raise UnsupportedDecodingError(
            "this bundle sets assess.grounded_decoding, which the vLLM embeds backend does not implement; "
            "serve it with the embedded backend or the vLLM plugin (serve.py --grounded-decoding)"
        )


@dataclass(frozen=True)
class VLLMSettings:
    """Every option of a :class:`VLLMBackend` a deployment sets (the server fills it from its settings).

    ``max_tokens`` None: the bundle's ``llm.max_new_tokens``, as the embedded backend generates.
    ``suppress_placeholders``: the ``<AudioHere>``/``<VideoHere>`` ids get a −100 logit bias, as the
    embedded backend suppresses them. ``export``: the merged export dir (hidden size checked locally).
    ``native``: the server runs this project's vLLM plugin (``backends/vllm_plugin``): requests carry
    prompt text + 32 + 32 soft tokens (:class:`~mllmdr_core.backends.vllm_native.VLLMNativeBackend`), so
    the stream server loads no LLM weights (:attr:`llm_weights`); ``maa_url`` / ``maa_model``: the
    plugin's pooling server (MAA head) for the regression score.
    """

    url: str
    model: str
    export: str | None = None
    api_key: str | None = None
    max_tokens: int | None = None
    suppress_placeholders: bool = True
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    wire_dtype: str | None = None  # None: bf16 (prompt embeddings), fp32 for the plugin's LQ-former outputs
    native: bool = False
    maa_url: str | None = None
    maa_model: str | None = None

    @property
    def llm_weights(self) -> bool:
        """Whether the stream server needs the bundle's LLM weights (not with the plugin)."""
        return not self.native

    def build(self, *, max_new_tokens: int, placeholder_ids: tuple[int, ...]) -> VLLMBackend:
        """The backend for a bundle whose model generates ``max_new_tokens`` and has ``placeholder_ids``."""
        kwargs: dict[str, Any] = {
            "max_tokens": self.max_tokens if self.max_tokens is not None else max_new_tokens,
            "suppress_token_ids": tuple(placeholder_ids) if self.suppress_placeholders else (),
            "api_key": self.api_key,
            "timeout_s": self.timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "wire_dtype": self.wire_dtype or "bfloat16",
        }
        if self.export:
            return VLLMBackend.from_export(self.url, self.export, self.model, **kwargs)
        return VLLMBackend(self.url, self.model, **kwargs)

    def for_bundle(self, bundle: LoadedBundle) -> VLLMBackend:
        """The backend for a loaded bundle (its ``llm.max_new_tokens`` and placeholder token ids); with
        ``native`` use :func:`mllmdr_core.backends.vllm_native.native_backend` instead."""
        require_free_decoding(bundle)
        model = bundle.model
        return self.build(
            max_new_tokens=int(bundle.config.llm.max_new_tokens),
            placeholder_ids=(int(model.audio_token_id), int(model.video_token_id)),
        )
