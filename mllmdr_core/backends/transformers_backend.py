"""Embedded backend: the 8 item prompts in one left-padded batch through transformers ``generate``.

Greedy and deterministic. The MAA score comes from the same forward pass: a hook on the LLM's decoder
keeps the final (normed) hidden states of the prefill step — (B, L, d_llm) — so no second pass runs and
no per-layer hidden states are stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from peft import PeftModel
from torch import nn
from transformers import GenerationConfig

from mllmdr_core.backends.base import ItemOutput, ItemRequest
from mllmdr_core.errors import BackendError
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


class TransformersBackend:
    """In-process generation with transformers (+ peft LoRA); implements ``LLMBackend``."""

    name = "transformers"

    def __init__(self, model: MLlmDR, max_new_tokens: int) -> None:
        self.model = model.eval()
        self.max_new_tokens = max_new_tokens
        tok = model.tokenizer
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
        with self._lock:
            new_tokens, scores = self._run(embeds, mask)
        return self._outputs(requests, new_tokens, scores)

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def keep_prefill(_module: nn.Module, _args: object, output: object) -> None:
            if not captured:
                captured.append(output.last_hidden_state)  # type: ignore[attr-defined]  # (B, L, d)

        handle = _decoder(self.model).register_forward_hook(keep_prefill)
        try:
            with torch.inference_mode():
                generate: Callable[..., torch.Tensor] = getattr(self.model.llm, "generate")  # noqa: B009
                new_tokens = generate(
                    inputs_embeds=embeds, attention_mask=mask, generation_config=self.generation_config
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
            text = str(self.model.tokenizer.decode(row[:n_gen], skip_special_tokens=True))
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
