"""The backend Protocol: spliced prompt embeddings in, generated text (+ MAA score) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class ItemRequest:
    """One PHQ-8 item prompt, already spliced: text embeddings with the 32+32 soft tokens in place."""

    item_key: str
    embeds: torch.Tensor  # (L, d_llm)
    prompt: str | None = None  # the prompt text; grounded decoding (issue 18) needs it


@dataclass
class ItemOutput:
    item_key: str
    text: str  # generated continuation only
    maa_score: float | None  # None when the backend cannot run the MAA head (e.g. remote vLLM)
    prompt_tokens: int
    generated_tokens: int


@runtime_checkable
class LLMBackend(Protocol):
    """Generates the 8 item answers in one batch. Raises ``BackendError`` when unavailable."""

    name: str

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]: ...

    def close(self) -> None: ...


@dataclass
class SoftPromptRequest:
    """One PHQ-8 item for a backend that holds the LLM itself: the prompt text (its ``<AudioHere>`` /
    ``<VideoHere>`` slots only for the modalities sent) — the soft tokens travel once per batch."""

    item_key: str
    prompt: str


@dataclass
class SoftTokens:
    """The LQ-formers' outputs of one window, shared by the 8 items: (Q, d_llm) each, ``None`` if absent."""

    audio: torch.Tensor | None
    video: torch.Tensor | None

    @classmethod
    def of(cls, audio: torch.Tensor | None, video: torch.Tensor | None) -> SoftTokens:
        """From ``MLlmDR.encode_modalities`` outputs of one window, (1, Q, d) or ``None``."""
        return cls(audio=None if audio is None else audio[0], video=None if video is None else video[0])


@runtime_checkable
class SoftTokenBackend(Protocol):
    """A backend that embeds the prompt tokens itself: the Assessor sends text + soft tokens and never
    needs the LLM's embedding table (see :mod:`mllmdr_core.backends.vllm_native`)."""

    name: str

    def generate_soft(self, requests: list[SoftPromptRequest], soft: SoftTokens) -> list[ItemOutput]: ...

    def close(self) -> None: ...
