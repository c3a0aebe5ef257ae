"""vLLM model plugin for a bundle's merged LLM: soft tokens arrive as multimodal embeddings.

vLLM loads this package through the ``vllm.general_plugins`` entry point declared in ``pyproject.toml``
(``mllmdr = "mllmdr_core.backends.vllm_plugin:register"``), in every vLLM process (API server and
engine workers), so a model exported by :func:`mllmdr_core.backends.merge.export_merged_llm` with
``plugin=True`` (config ``architectures = [ARCHITECTURE]``) is served by
:class:`~mllmdr_core.backends.vllm_plugin.model.MllmdrLlamaForCausalLM`.

A request carries the item prompt (its ``<AudioHere>`` / ``<VideoHere>`` tokens) plus, per modality,
``audio_embeds`` / ``video_embeds``: the LQ-former's output before its projection, (Q, d_lq), when the
export holds the projections (the default: d_lq = 768 vs d_llm = 4096 for the paper's shapes), else the
(Q, d_llm) soft tokens; the plugin's processor expands each placeholder token to Q positions and the
model scatters the (projected) soft tokens into them. This module imports
nothing from vLLM: only :func:`register` (called by vLLM) does, so the core stays importable without it.
"""

from __future__ import annotations

ARCHITECTURE = "MllmdrLlamaForCausalLM"
MODEL_CLASS = "mllmdr_core.backends.vllm_plugin.model:MllmdrLlamaForCausalLM"
# The pooling variant (``--runner pooling --hf-overrides '{"architectures": [MAA_ARCHITECTURE]}'``): the
# MAA head as its pooler, one score per prompt.
MAA_ARCHITECTURE = "MllmdrLlamaMAAModel"
MAA_MODEL_CLASS = "mllmdr_core.backends.vllm_plugin.model:MllmdrLlamaMAAModel"
MAA_WEIGHTS_NAME = "mllmdr/maa.safetensors"  # in the export (a sub-folder: vLLM skips it as weights)
# The LQ-formers' output projections (``LQFormer.proj``, keys ``audio.*`` / ``video.*``): with them in the
# export the client sends each LQ-former's (Q, d_lq) output and the plugin projects it to (Q, d_llm).
PROJECTION_WEIGHTS_NAME = "mllmdr/projection.safetensors"
# config.json keys the export writes: the placeholder token ids and the soft tokens per placeholder.
AUDIO_TOKEN_KEY = "mllmdr_audio_token_id"
VIDEO_TOKEN_KEY = "mllmdr_video_token_id"
NUM_QUERIES_KEY = "mllmdr_num_queries"
# the width of what the client sends per modality (d_lq with the projections, else absent: d_llm)
AUDIO_INPUT_DIM_KEY = "mllmdr_audio_input_dim"
VIDEO_INPUT_DIM_KEY = "mllmdr_video_input_dim"
# The chat template the export ships: the message content verbatim (the client sends the item prompt).
RAW_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def register() -> None:
    """``vllm.general_plugins`` entry point: register the model class (lazily, by import path)."""
    from vllm import ModelRegistry

    supported = ModelRegistry.get_supported_archs()
    for arch, cls in ((ARCHITECTURE, MODEL_CLASS), (MAA_ARCHITECTURE, MAA_MODEL_CLASS)):
        if arch not in supported:
            ModelRegistry.register_model(arch, cls)
