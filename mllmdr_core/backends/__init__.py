"""LLM backends behind one Protocol: embedded transformers+peft, or a vLLM server."""

from mllmdr_core.backends.base import ItemOutput, ItemRequest, LLMBackend

__all__ = ["ItemOutput", "ItemRequest", "LLMBackend"]
