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
