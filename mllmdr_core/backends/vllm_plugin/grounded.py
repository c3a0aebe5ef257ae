"""Grounded decoding (issue 18) inside vLLM: a logits processor the launcher registers
(``--logits-processors`` :data:`~mllmdr_core.backends.vllm_plugin.serve.GROUNDED_PROCESSOR`; imported
by vLLM only).

A request opts in with ``vllm_xargs: {"mllmdr_grounded": 1}`` (``serve.GROUNDED_ARG``); its item prompt is
read back from the request's own prompt token ids (the plugin's chat requests carry them; a batched
request's conversations each get their own), so every item is grounded on its own prompt, exactly as
the embedded backend's :class:`~mllmdr_core.grounded_decoding.GroundedDecoder` does: per step every
logit but the chosen token's becomes -inf (greedy). ``{"mllmdr_grounded_probe": [ids]}``
(``serve.PROBE_ARG``) forces those tokens, so a client can tell a server with the processor from one
without it (which would ignore the argument and decode freely).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoTokenizer
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from mllmdr_core.backends.vllm_plugin.serve import GROUNDED_ARG, PROBE_ARG
from mllmdr_core.grounded_decoding import GroundedDecoder, GroundingVocab


def _only(logits: torch.Tensor, token: int) -> torch.Tensor:
    out = torch.full_like(logits, float("-inf"))
    out[token] = 0.0
    return out


class GroundedLogitsProcessor(AdapterLogitsProcessor):
    """Per request with :data:`GROUNDED_ARG`: grounded greedy decoding on the request's prompt."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        self._tokenizer_path = vllm_config.model_config.tokenizer
        self._vocab: GroundingVocab | None = None
        self._tokenizer: Any = None

    def is_argmax_invariant(self) -> bool:
        return False

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        args = sampling_params.extra_args or {}
        probe = args.get(PROBE_ARG)
        if probe is not None and not (isinstance(probe, list) and all(isinstance(t, int) for t in probe)):
            raise ValueError(f"{PROBE_ARG} must be a list of token ids")

    def _grounding_vocab(self) -> GroundingVocab:
        if self._vocab is None:
            tok = AutoTokenizer.from_pretrained(self._tokenizer_path)
            self._tokenizer = tok

            def decode(ids: list[int]) -> str:
                return str(tok.decode(ids, skip_special_tokens=True))

            self._vocab = GroundingVocab(decode, len(tok), int(tok.eos_token_id))
        return self._vocab

    def new_req_logits_processor(self, params: Any) -> Callable[..., torch.Tensor] | None:
        args = params.extra_args or {}
        if PROBE_ARG in args:
            forced = [int(t) for t in args[PROBE_ARG]]

            def probe(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                return _only(logits, forced[min(len(output_ids), len(forced) - 1)])

            return probe
        if not args.get(GROUNDED_ARG):
            return None
        vocab = self._grounding_vocab()
        banned = {int(t) for t, bias in (params.logit_bias or {}).items() if bias < 0}
        decoders: dict[int, GroundedDecoder] = {}

        def grounded(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            dec = decoders.get(0)
            if dec is None:
                ids = list(prompt_ids)
                if ids and ids[0] == self._tokenizer.bos_token_id:
                    ids = ids[1:]
                dec = decoders[0] = GroundedDecoder(vocab, str(self._tokenizer.decode(ids)))
            order = logits.argsort(descending=True).tolist()
            ranked = [t for t in order if t < len(vocab.strings) and t not in banned]
            return _only(logits, dec.pick(list(output_ids), ranked))

        return grounded
