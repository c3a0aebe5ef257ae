"""Embedded backend: the 8 item prompts in one left-padded batch through transformers ``generate``.

Greedy and deterministic. With ``grounded_decoding`` a logits processor keeps, per row, only the
token :class:`~mllmdr_core.grounded_decoding.GroundedDecoder` chooses (issue 18). The MAA score comes
from the same forward pass: a hook on the LLM's decoder keeps the final (normed) hidden states of the
prefill step — (B, L, d_llm) — so no second pass runs and no per-layer hidden states are stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from peft import PeftModel
from torch import nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from mllmdr_core.backends.base import ItemOutput, ItemRequest
from mllmdr_core.errors import BackendError
from mllmdr_core.grounded_decoding import GroundedDecoder, GroundingVocab
from mllmdr_core.model.mllm import MLlmDR


def left_pad(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (L_i, d) → left-padded (B, L, d) zeros-padded and the (B, L) attention mask."""
    length = max(e.shape[0] for e in embeds)
    out = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[-1])  # (B, L, d)
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=out.device)  # (B, L)
    for i, e in enumerate(embeds):
        out[i, length - e.shape[0] :] = e
        mask[i, length - e.shape[0] :] = 1
    return out, mask


def _decoder(model: MLlmDR) -> nn.Module:
    base = model.llm.get_base_model() if isinstance(model.llm, PeftModel) else model.llm
    decoder = getattr(base, "get_decoder")()  # noqa: B009  (typed loosely by transformers)
    assert isinstance(decoder, nn.Module)
    return decoder


_SCAN = 64  # candidates scanned per step before the decoder's fallback


class GroundedLogitsProcessor(LogitsProcessor):
    """Greedy grounded decoding: per row of the batch, every logit but the chosen token's is -inf."""

    def __init__(self, decoders: list[GroundedDecoder]) -> None:
        self.decoders = decoders

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, float("-inf"))  # (B, V)
        for i, dec in enumerate(self.decoders):
            ids = input_ids[i].tolist()  # the generated tokens so far (the prompt came as embeddings)
            row = scores[i]
            if dec.vocab.eos_id in ids:  # finished: generate pads this row
                out[i] = row
                continue
            finite = int(torch.isfinite(row).sum())
            ranked = row.argsort(descending=True)[:finite].tolist()  # suppressed tokens left out
            out[i, dec.pick(ids, ranked, _SCAN)] = 0.0
        return out  # type: ignore[return-value]


class TransformersBackend:
    """In-process generation with transformers (+ peft LoRA); implements ``LLMBackend``."""

    name = "transformers"

    def __init__(self, model: MLlmDR, max_new_tokens: int, *, grounded_decoding: bool = False) -> None:
        self.model = model.eval()
        self.max_new_tokens = max_new_tokens
        tok = model.tokenizer
        self.grounding_vocab: GroundingVocab | None = None
        if grounded_decoding:
            self.grounding_vocab = GroundingVocab(self._decode, len(tok), int(tok.eos_token_id))
        self.eos_id = int(tok.eos_token_id)
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=int(tok.pad_token_id),
            eos_token_id=self.eos_id,
            bos_token_id=tok.bos_token_id,
            suppress_tokens=[model.audio_token_id, model.video_token_id],
        )
        self._closed = False
        self._lock = threading.Lock()  # one generation at a time: the prefill hook is per call

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]:
        """One batched greedy generation; ``maa_score`` from the prefill's last hidden states."""
        if self._closed:
            raise BackendError("transformers backend is closed")
        if not requests:
            return []
        dtype = next(self.model.llm.parameters()).dtype
        embeds, mask = left_pad([r.embeds.to(dtype) for r in requests])  # (B, L, d), (B, L)
        processors = LogitsProcessorList()
        if self.grounding_vocab is not None:
            if any(r.prompt is None for r in requests):
                raise BackendError("grounded decoding needs every request's prompt text")
            vocab = self.grounding_vocab
            decoders = [GroundedDecoder(vocab, str(r.prompt)) for r in requests]
            processors.append(GroundedLogitsProcessor(decoders))
        with self._lock:
            new_tokens, scores = self._run(embeds, mask, processors)
        return self._outputs(requests, new_tokens, scores)

    def _decode(self, ids: list[int]) -> str:
        return str(self.model.tokenizer.decode(ids, skip_special_tokens=True))

    def _run(
        self, embeds: torch.Tensor, mask: torch.Tensor, processors: LogitsProcessorList
    ) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def keep_prefill(_module: nn.Module, _args: object, output: object) -> None:
            if not captured:
                captured.append(output.last_hidden_state)  # type: ignore[attr-defined]  # (B, L, d)

        handle = _decoder(self.model).register_forward_hook(keep_prefill)
        try:
            with torch.inference_mode():
                generate: Callable[..., torch.Tensor] = getattr(self.model.llm, "generate")  # noqa: B009
                new_tokens = generate(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    generation_config=self.generation_config,
                    logits_processor=processors,
                )  # (B, n_new)
                scores = self.model.maa(captured[0], mask.bool()).float()  # (B,)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"transformers generation failed: {exc}") from exc
        finally:
            handle.remove()
        return new_tokens, scores

    def _outputs(
        self, requests: list[ItemRequest], new_tokens: torch.Tensor, scores: torch.Tensor
    ) -> list[ItemOutput]:
        outputs = []
        for i, req in enumerate(requests):
            row = new_tokens[i].tolist()
            n_gen = row.index(self.eos_id) if self.eos_id in row else len(row)
            text = self._decode(row[:n_gen])
            outputs.append(
                ItemOutput(
                    item_key=req.item_key,
                    text=text.strip(),
                    maa_score=float(scores[i]),
                    prompt_tokens=int(req.embeds.shape[0]),
                    generated_tokens=n_gen,
                )
            )
        return outputs

    def close(self) -> None:
        self._closed = True
