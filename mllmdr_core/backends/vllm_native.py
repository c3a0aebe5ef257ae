"""LLM backend for the project's vLLM plugin: item prompts as text, soft tokens as multimodal embeddings.

The stream server runs only the LQ-formers (32 + 32 outputs per window) and holds no LLM weights; vLLM
serves the bundle's merged model exported with ``merge.export_merged_llm(..., plugin_soft_tokens=Q)``
under the plugin's architecture (:mod:`mllmdr_core.backends.vllm_plugin`), started with
``--enable-mm-embeds``. Each item is a one-message conversation: the item prompt plus ``audio_embeds`` /
``video_embeds`` parts (base64 ``torch.save`` of (Q, d_lq) LQ-former outputs, fp32 by default, or of
(Q, d_llm) soft tokens, bf16 by default; each with a content-hash ``uuid``); the export's chat
template passes the prompt through verbatim and ``add_special_tokens`` adds the BOS, so vLLM sees the
same token ids as ``MLlmDR.prompt_embeds`` with each placeholder expanded to Q soft-token positions.
Text is decoded from the returned token ids with the bundle's tokenizer.

``input_dims`` (``from_bundle``'s default): the export holds the LQ-formers' output projections
(``LQFormer.proj``, d_lq → proj_hidden → d_llm) and the plugin applies them, so the client sends each
LQ-former's (Q, d_lq) output instead of the (Q, d_llm) soft tokens: d_lq = 768 (HuBERT-base width) and
the visual width vs d_llm = 4096 for the paper's shapes. The projection is not part of the LLM: the
stream server still holds no LLM weights, and the soft tokens are the same numbers (fp32 in vLLM).
This is what brings an assessment (generation + MAA request, each carrying the tensors once) under
1 MiB at d_llm = 4096 (``bench/vllm_native.py``); without it the two copies of (Q, 4096) bf16 soft
tokens alone are ≈ 1.33 MiB.

``share_soft_tokens`` (default): the 8 items go in ONE ``POST /v1/chat/completions/batch``; only the
first conversation carries the tensors, the other 7 name them by uuid and vLLM's multimodal processor
cache supplies them (the plugin parses soft tokens as processor data, which that cache keeps; vLLM
skips it for pass-through embeddings). Wire cost ≈ 2·Q·w·2 bytes·4/3 + the 8 prompt texts per request
(w = d_llm or d_lq): ≈ 0.69 MiB at Q = 32, w = 4096. Without it, 8 concurrent ``/v1/chat/completions``
requests each carry the tensors (≈ 5.4 MiB at w = 4096). Whole prompt embeddings (``vllm_backend``) cost
≈ 130 MiB for 1,562-token items.

``maa_url`` names a second vLLM server that serves the same export as the plugin's pooling variant
(:data:`~mllmdr_core.backends.vllm_plugin.MAA_ARCHITECTURE`, MAA head as pooler): the same 8
conversations go to its ``/v1/embeddings`` in one request, concurrently with the generation, and each
answers one number, the item's ``maa_score`` (another ≈ 0.69 MiB). Without it ``maa_score`` is ``None``.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from transformers import PreTrainedTokenizerBase

from mllmdr_core.backends.base import ItemOutput, SoftPromptRequest, SoftTokens
from mllmdr_core.backends.vllm_backend import (
    VLLMBackend,
    VLLMSettings,
    encode_prompt_embeds,
)
from mllmdr_core.backends.vllm_plugin.serve import GROUNDED_ARG, PROBE_ARG
from mllmdr_core.bundle import LoadedBundle
from mllmdr_core.errors import BackendError, UnsupportedDecodingError
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN


class VLLMNativeBackend(VLLMBackend):
    """``SoftTokenBackend`` over the plugin model's Chat Completions API (retries as ``VLLMBackend``)."""

    name = "vllm-native"

    def __init__(
        self,
        *args: Any,
        tokenizer: PreTrainedTokenizerBase | None = None,
        maa_url: str | None = None,
        maa_model_name: str | None = None,
        share_soft_tokens: bool = True,
        input_dims: dict[str, int] | None = None,
        grounded: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.share_soft_tokens = share_soft_tokens
        # grounded decoding (issue 18): every request asks the server's logits processor for it; the
        # first assessment probes that the server has it (UnsupportedDecodingError if not)
        self.grounded = grounded
        self._grounded_checked = False
        # {"audio": d_lq, "video": d_lq}: the server projects (the export holds the LQ-formers' projections)
        # and ``SoftTokens`` carry the LQ-formers' outputs before them; None: (Q, d_llm) soft tokens
        self.input_dims = input_dims
        self.tokenizer = tokenizer  # decodes the returned token ids as the embedded backend does
        # The plugin's pooling variant (MAA head as pooler) serving the same export: one score per item.
        self.maa: VLLMBackend | None = None
        if maa_url is not None:
            maa_kwargs = {
                k: v for k, v in kwargs.items() if k in ("timeout_s", "retries", "backoff_s", "api_key")
            }
            self.maa = VLLMBackend(maa_url, maa_model_name or self.model_name, **maa_kwargs)
        self.last_assessment_bytes = 0  # JSON bodies of the last generate_soft call, all items

    @classmethod
    def from_bundle(
        cls, base_url: str, bundle: LoadedBundle, model_name: str, **kwargs: Any
    ) -> VLLMNativeBackend:
        """For ``bundle`` (loaded with or without LLM weights): its hidden size, tokenizer, placeholder
        suppression, ``max_new_tokens``, ``assess.grounded_decoding`` and its LQ-formers' widths
        (``server_projection=True``, the default: the export holds the projections; ``False`` sends
        (Q, d_llm) soft tokens)."""
        model = bundle.model
        kwargs.setdefault("grounded", bundle.config.assess.grounded_decoding)
        kwargs.setdefault("max_tokens", bundle.config.llm.max_new_tokens)
        kwargs.setdefault("suppress_token_ids", (model.audio_token_id, model.video_token_id))
        if kwargs.pop("server_projection", True):
            kwargs.setdefault(
                "input_dims", {"audio": model.audio_lqformer.d_model, "video": model.visual_lqformer.d_model}
            )
            # small enough to send exactly: MAA within 3e-7 of the embedded head (bf16: up to 8.5e-5)
            kwargs.setdefault("wire_dtype", "float32")
        return cls(base_url, model_name, hidden_size=model.d_llm, tokenizer=bundle.tokenizer, **kwargs)

    @property
    def server_projection(self) -> bool:
        """True: the ``Assessor`` sends the LQ-formers' outputs before their projection
        (``MLlmDR.encode_latents``), which the plugin applies."""
        return self.input_dims is not None

    def soft_parts(self, soft: SoftTokens, *, reference: bool = False) -> list[dict[str, Any]]:
        """The multimodal content parts for one window's soft tokens, each with a content-hash ``uuid``;
        ``reference``: the uuid alone (vLLM takes the tensor from its processor cache)."""
        parts: list[dict[str, Any]] = []
        for modality, tokens in (("audio", soft.audio), ("video", soft.video)):
            if tokens is None:
                continue
            width = self.hidden_size if self.input_dims is None else self.input_dims[modality]
            if tokens.dim() != 2 or (width is not None and tokens.shape[1] != width):
                shape = tuple(tokens.shape)
                raise BackendError(f"{modality} soft tokens must be (Q, {width or 'd'}), got {shape}")
            key = f"{modality}_embeds"
            data = encode_prompt_embeds(tokens, self.wire_dtype)
            uuid = f"mllmdr-{modality}-" + hashlib.sha256(data.encode()).hexdigest()[:32]
            parts.append({"type": key, key: None if reference else data, "uuid": uuid})
        return parts

    def conversations(
        self, requests: list[SoftPromptRequest], soft: SoftTokens
    ) -> list[list[dict[str, Any]]]:
        """One single-message conversation per item; with ``share_soft_tokens`` only the first carries the
        tensors, the others name them by uuid (one batched request: vLLM processes them in order)."""
        full = self.soft_parts(soft)
        ref = self.soft_parts(soft, reference=True) if self.share_soft_tokens else full
        return [
            [{"role": "user", "content": [{"type": "text", "text": r.prompt}, *(full if i == 0 else ref)]}]
            for i, r in enumerate(requests)
        ]

    def payload(self, request: SoftPromptRequest, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The Chat Completions body of one item (greedy, placeholders suppressed)."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": [{"type": "text", "text": request.prompt}, *parts]}],
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "add_special_tokens": True,  # BOS, as the tokenizer adds in-process
            "skip_special_tokens": True,
            "return_token_ids": True,
        }
        if self.suppress_token_ids:
            body["logit_bias"] = {str(t): -100.0 for t in self.suppress_token_ids}
        if self.grounded:
            body["vllm_xargs"] = {GROUNDED_ARG: 1}
        return body

    def check_grounded(self) -> None:
        """Probe once that the server runs the grounded-decoding processor: it must force the probe's
        tokens. A server without it would ignore the request's argument and decode freely, so this
        raises :class:`UnsupportedDecodingError` (launch it with ``serve.py --grounded-decoding``)."""
        if self._grounded_checked:
            return
        if self.tokenizer is None:
            raise UnsupportedDecodingError("grounded decoding on vLLM needs the bundle's tokenizer")
        forced = [int(t) for t in self.tokenizer("grounded probe", add_special_tokens=False)["input_ids"]]
        body = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "probe"}]}],
            "max_tokens": len(forced),
            "temperature": 0.0,
            "return_token_ids": True,
            "vllm_xargs": {PROBE_ARG: forced},
        }
        (choice,) = self._choices(self._request("POST", "/v1/chat/completions", body), 1)
        if choice.get("token_ids") != forced:
            raise UnsupportedDecodingError(
                "the vLLM server does not run the grounded-decoding logits processor this bundle's "
                "assess.grounded_decoding needs: launch it with serve.py --grounded-decoding"
            )
        self._grounded_checked = True

    def generate_soft(self, requests: list[SoftPromptRequest], soft: SoftTokens) -> list[ItemOutput]:
        """All items concurrently, greedy; outputs in request order."""
        if not requests:
            return []
        for r in requests:  # vLLM answers 500 (retried in vain) for a slot without its soft tokens
            for slot, tokens in ((AUDIO_TOKEN, soft.audio), (VIDEO_TOKEN, soft.video)):
                if r.prompt.count(slot) != (tokens is not None):
                    raise BackendError(
                        f"item {r.item_key}: the prompt has {r.prompt.count(slot)} {slot} slot(s) for "
                        f"{'one' if tokens is not None else 'no'} set of soft tokens"
                    )
        if self.grounded:
            self.check_grounded()
        conversations = self.conversations(requests, soft)
        if self.share_soft_tokens:  # one batched request
            batch = self.payload(requests[0], [])
            batch["messages"] = conversations
            bodies = [batch]
        else:  # one request per item, each with the tensors
            bodies = [
                {**self.payload(r, []), "messages": c} for r, c in zip(requests, conversations, strict=True)
            ]
        path = "/v1/chat/completions/batch" if self.share_soft_tokens else "/v1/chat/completions"
        self.last_assessment_bytes = sum(len(json.dumps(b)) for b in bodies)
        maa_body = None
        if self.maa is not None:  # all items in one embeddings request (batched conversations)
            maa_body = {"model": self.maa.model_name, "messages": conversations, "add_special_tokens": True}
            self.last_assessment_bytes += len(json.dumps(maa_body))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(bodies) + 1) as pool:
            scores = None if maa_body is None else pool.submit(self._maa_scores, maa_body, len(requests))
            answers = list(pool.map(lambda b: self._request("POST", path, b), bodies))
            maa = [None] * len(requests) if scores is None else scores.result()
        self.stats.last_latency_s = time.perf_counter() - t0
        self.stats.last_payload_bytes = self.last_assessment_bytes
        per_answer = len(requests) if self.share_soft_tokens else 1
        choices = [c for a in answers for c in self._choices(a, per_answer)]
        outputs = [self._parse_choice(c, r) for c, r in zip(choices, requests, strict=True)]
        served = sum(int(a.get("usage", {}).get("prompt_tokens", 0)) for a in answers)
        if self.tokenizer is not None:  # per item: the batch answers only a total
            for out, r in zip(outputs, requests, strict=True):
                out.prompt_tokens = self.prompt_length(r.prompt, soft)
            if served != sum(o.prompt_tokens for o in outputs):
                raise BackendError(
                    f"vLLM counted {served} prompt tokens, the bundle's tokenizer "
                    f"{sum(o.prompt_tokens for o in outputs)}: the served model is not this bundle's export"
                )
        elif not self.share_soft_tokens:
            for out, a in zip(outputs, answers, strict=True):
                out.prompt_tokens = int(a.get("usage", {}).get("prompt_tokens", 0))
        for out, score in zip(outputs, maa, strict=True):
            out.maa_score = score
        return outputs

    def maa_scores(self, requests: list[SoftPromptRequest], soft: SoftTokens) -> list[float | None]:
        """Only the MAA scores of ``requests`` (one embeddings request to the pooling server)."""
        if self.maa is None:
            raise BackendError("no MAA server configured (maa_url)")
        messages = self.conversations(requests, soft)
        body = {"model": self.maa.model_name, "messages": messages, "add_special_tokens": True}
        return self._maa_scores(body, len(requests))

    def _maa_scores(self, body: dict[str, Any], n: int) -> list[float | None]:
        assert self.maa is not None
        answer = self.maa._request("POST", "/v1/embeddings", body)
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != n:
            raise BackendError(f"vLLM MAA server answered {str(answer)[:200]} for {n} items")
        by_index = {int(d["index"]): d["embedding"] for d in data if isinstance(d, dict)}
        try:
            return [float(by_index[i][0]) for i in range(n)]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"vLLM MAA server answered malformed scores: {str(data)[:200]}") from exc

    def close(self) -> None:
        super().close()
        if self.maa is not None:
            self.maa.close()

    def _text(self, message: dict[str, Any], token_ids: object) -> str:
        """The answer text: the token ids decoded by the bundle's tokenizer (up to EOS) when available,
        so the text equals the embedded backend's; else vLLM's own detokenized content."""
        if self.tokenizer is None or not isinstance(token_ids, list):
            return str(message.get("content") or "").strip()
        ids = [int(t) for t in token_ids]
        eos = self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)).strip()

    def prompt_length(self, prompt: str, soft: SoftTokens) -> int:
        """Tokens vLLM prefills for ``prompt``: its ids with each slot expanded to its soft tokens."""
        assert self.tokenizer is not None
        n = len(self.tokenizer(prompt)["input_ids"])
        for slot, tokens in ((AUDIO_TOKEN, soft.audio), (VIDEO_TOKEN, soft.video)):
            if tokens is not None:
                n += prompt.count(slot) * (int(tokens.shape[0]) - 1)
        return n

    @staticmethod
    def _choices(body: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """The ``n`` choices of one answer, in index order (``BackendError`` when malformed)."""
        choices = body.get("choices")
        if (
            not isinstance(choices, list)
            or len(choices) != n
            or not all(isinstance(c, dict) for c in choices)
        ):
            raise BackendError(f"vLLM answered {str(body)[:200]} for {n} conversation(s)")
        by_index = {c.get("index"): c for c in choices}
        if sorted(by_index, key=str) != sorted(range(n), key=str):
            raise BackendError(f"vLLM choice indices {sorted(by_index, key=str)} for {n} conversation(s)")
        return [by_index[i] for i in range(n)]

    def _parse_choice(self, choice: dict[str, Any], request: SoftPromptRequest) -> ItemOutput:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise BackendError(f"vLLM answered item {request.item_key} without a message")
        token_ids = choice.get("token_ids")
        prompt_ids = choice.get("prompt_token_ids")
        return ItemOutput(
            item_key=request.item_key,
            text=self._text(message, token_ids),
            maa_score=None,
            prompt_tokens=len(prompt_ids) if isinstance(prompt_ids, list) else 0,
            generated_tokens=len(token_ids) if isinstance(token_ids, list) else 0,
        )


def native_backend(settings: VLLMSettings, bundle: LoadedBundle) -> VLLMNativeBackend:
    """The plugin client for ``bundle`` from the deployment's ``settings`` (``settings.native``): every
    option of the ``vllm`` backend plus the MAA pooling server."""
    max_tokens = settings.max_tokens
    if max_tokens is None:
        max_tokens = int(bundle.config.llm.max_new_tokens)
    return VLLMNativeBackend.from_bundle(
        settings.url,
        bundle,
        settings.model,
        maa_url=settings.maa_url,
        maa_model_name=settings.maa_model,
        max_tokens=max_tokens,
        api_key=settings.api_key,
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        **({} if settings.wire_dtype is None else {"wire_dtype": settings.wire_dtype}),
        **({} if settings.suppress_placeholders else {"suppress_token_ids": ()}),
    )
