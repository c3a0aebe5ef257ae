"""LLM backend for the project's vLLM plugin: item prompts as text, soft tokens as multimodal embeddings.

The stream server runs only the LQ-formers (32 + 32 soft tokens of d_llm per window) and holds no LLM
weights; vLLM serves the bundle's merged model exported with ``merge.export_merged_llm(...,
plugin_soft_tokens=Q)`` under the plugin's architecture (:mod:`mllmdr_core.backends.vllm_plugin`),
started with ``--enable-mm-embeds``. Each item is one ``POST /v1/chat/completions`` whose single user
message is the item prompt plus ``audio_embeds`` / ``video_embeds`` parts (base64 ``torch.save`` of
(Q, d), bf16 by default); the export's chat template passes the prompt through verbatim and
``add_special_tokens`` adds the BOS, so vLLM sees the same token ids as ``MLlmDR.prompt_embeds`` with
each placeholder expanded to Q soft-token positions. The 8 items go concurrently (vLLM batches them).

Wire cost per item ≈ prompt text + 2·Q·d·2 bytes·4/3 (base64): ≈ 683 KiB at Q = 32, d = 4096, i.e.
≈ 5.3 MiB per assessment against ≈ 130 MiB of whole prompt embeddings (``vllm_backend``). vLLM's
multimodal cache skips embedding inputs, so the soft tokens cannot be sent once and referenced by the
other 7 items with this vLLM. ``maa_url`` names a second vLLM server that serves the same export as
the plugin's pooling variant (:data:`~mllmdr_core.backends.vllm_plugin.MAA_ARCHITECTURE`, MAA head as
pooler): the 8 items go to its ``/v1/embeddings`` in one request, concurrently with the generation, and
each answers one number, the item's ``maa_score``. Without it ``maa_score`` is ``None``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from transformers import PreTrainedTokenizerBase

from mllmdr_core.backends.base import ItemOutput, SoftPromptRequest, SoftTokens
from mllmdr_core.backends.vllm_backend import VLLMBackend, encode_prompt_embeds
from mllmdr_core.bundle import LoadedBundle
from mllmdr_core.errors import BackendError
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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
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
        suppression and ``max_new_tokens``."""
        model = bundle.model
        kwargs.setdefault("max_tokens", bundle.config.llm.max_new_tokens)
        return cls(
            base_url,
            model_name,
            hidden_size=model.d_llm,
            suppress_token_ids=(model.audio_token_id, model.video_token_id),
            tokenizer=bundle.tokenizer,
            **kwargs,
        )

    def soft_parts(self, soft: SoftTokens) -> list[dict[str, Any]]:
        """The multimodal content parts for one window's soft tokens (encoded once, reused by 8 items)."""
        parts: list[dict[str, Any]] = []
        for modality, tokens in (("audio", soft.audio), ("video", soft.video)):
            if tokens is None:
                continue
            if tokens.dim() != 2 or (self.hidden_size is not None and tokens.shape[1] != self.hidden_size):
                raise BackendError(
                    f"{modality} soft tokens must be (Q, {self.hidden_size or 'd'}), "
                    f"got {tuple(tokens.shape)}"
                )
            key = f"{modality}_embeds"
            parts.append({"type": key, key: encode_prompt_embeds(tokens, self.wire_dtype)})
        return parts

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
        return body

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
        parts = self.soft_parts(soft)
        bodies = [self.payload(r, parts) for r in requests]
        self.last_assessment_bytes = sum(len(json.dumps(b)) for b in bodies)
        maa_body = None
        if self.maa is not None:  # all items in one embeddings request (batched conversations)
            maa_body = {
                "model": self.maa.model_name,
                "messages": [b["messages"] for b in bodies],
                "add_special_tokens": True,
            }
            self.last_assessment_bytes += len(json.dumps(maa_body))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(bodies) + 1) as pool:
            scores = None if maa_body is None else pool.submit(self._maa_scores, maa_body, len(bodies))
            answers = list(pool.map(lambda b: self._request("POST", "/v1/chat/completions", b), bodies))
            maa = [None] * len(bodies) if scores is None else scores.result()
        self.stats.last_latency_s = time.perf_counter() - t0
        self.stats.last_payload_bytes = self.last_assessment_bytes
        outputs = [self._parse_chat(a, r) for a, r in zip(answers, requests, strict=True)]
        for out, score in zip(outputs, maa, strict=True):
            out.maa_score = score
        return outputs

    def maa_scores(self, requests: list[SoftPromptRequest], soft: SoftTokens) -> list[float | None]:
        """Only the MAA scores of ``requests`` (one embeddings request to the pooling server)."""
        if self.maa is None:
            raise BackendError("no MAA server configured (maa_url)")
        parts = self.soft_parts(soft)
        messages = [self.payload(r, parts)["messages"] for r in requests]
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

    def _parse_chat(self, body: dict[str, Any], request: SoftPromptRequest) -> ItemOutput:
        choices = body.get("choices")
        usage = body.get("usage")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(usage, dict):
            raise BackendError(f"vLLM answered item {request.item_key} without one choice: {str(body)[:200]}")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            raise BackendError(f"vLLM answered item {request.item_key} without a message")
        return ItemOutput(
            item_key=request.item_key,
            text=self._text(message, choices[0].get("token_ids")),
            maa_score=None,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            generated_tokens=int(usage.get("completion_tokens", 0)),
        )
