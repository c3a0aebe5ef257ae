"""The vLLM model class of the plugin (imported by vLLM only): Llama + 32 + 32 soft tokens as embeddings.

``<AudioHere>`` / ``<VideoHere>`` in a prompt each become ``Q`` placeholder positions (the processor's
prompt replacement); ``embed_multimodal`` returns the client's soft tokens (or the client's LQ-former
outputs through the export's projections), which vLLM scatters into those positions, exactly as
:meth:`mllmdr_core.model.mllm.MLlmDR.splice` does in-process. Inputs are
embeddings only (``--enable-mm-embeds``): no encoder runs inside vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.model_executor.layers.pooler import Pooler
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser, ProcessorBatchItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from mllmdr_core.backends.vllm_plugin import (
    AUDIO_INPUT_DIM_KEY,
    AUDIO_TOKEN_KEY,
    MAA_WEIGHTS_NAME,
    NUM_QUERIES_KEY,
    PROJECTION_WEIGHTS_NAME,
    VIDEO_INPUT_DIM_KEY,
    VIDEO_TOKEN_KEY,
)

MODALITIES = ("audio", "video")
PLACEHOLDERS = {"audio": "<AudioHere>", "video": "<VideoHere>"}


def _token_ids(config: Any) -> dict[str, int]:
    return {"audio": int(getattr(config, AUDIO_TOKEN_KEY)), "video": int(getattr(config, VIDEO_TOKEN_KEY))}


def _input_dims(config: Any) -> dict[str, int]:
    """Width of what a client sends per modality: d_lq when the export holds the projections, else d."""
    d = int(config.hidden_size)
    keys = {"audio": AUDIO_INPUT_DIM_KEY, "video": VIDEO_INPUT_DIM_KEY}
    return {m: int(getattr(config, k, None) or d) for m, k in keys.items()}


def load_projections(model_dir: str) -> dict[str, torch.nn.Module]:
    """The LQ-formers' output projections from the export (fp32), ``{}`` if it has none."""
    path = Path(model_dir) / PROJECTION_WEIGHTS_NAME
    if not path.exists():
        return {}
    from safetensors.torch import load_file

    state = load_file(str(path))
    out: dict[str, torch.nn.Module] = {}
    for modality in MODALITIES:
        w0, w2 = state[f"{modality}.0.weight"], state[f"{modality}.2.weight"]
        nn = torch.nn
        proj = nn.Sequential(nn.Linear(*w0.shape[::-1]), nn.ReLU(), nn.Linear(*w2.shape[::-1]))
        proj.load_state_dict(
            {k.removeprefix(f"{modality}."): v for k, v in state.items() if k.startswith(f"{modality}.")},
            strict=True,
        )
        out[modality] = proj.float().eval()
    return out


class SoftTokenItems(ProcessorBatchItems):
    """Soft tokens (Q, d) per item, parsed as processor data rather than pass-through embeddings, so that
    vLLM's multimodal processor cache keeps them: a later item that names the same ``uuid`` with no
    tensor (``"audio_embeds": null``) reuses them, and one assessment sends them once."""

    def get_processor_data(self) -> Mapping[str, object]:
        return {f"{self.modality}_soft": self.get_all()}

    def get_feature_size(self, item_idx: int) -> int:
        return int(self.get(item_idx).shape[0])


class SoftTokenParser(MultiModalDataParser):
    """``audio`` / ``video`` data → :class:`SoftTokenItems` ((N, Q, d) tensor or a list of (Q, d) / None)."""

    def _get_subparsers(self) -> Mapping[str, Any]:
        def parse(modality: str) -> Any:
            def run(data: Any) -> SoftTokenItems | None:
                if data is None:
                    return None
                items = (
                    list(torch.unbind(data)) if isinstance(data, torch.Tensor) and data.ndim == 3 else data
                )
                if isinstance(items, torch.Tensor):
                    items = [items]
                return SoftTokenItems(list(items), modality)

            return run

        return {m: parse(m) for m in MODALITIES}


class MllmdrProcessingInfo(BaseProcessingInfo):
    """One audio and one video item per prompt, ``Q`` positions each."""

    def get_data_parser(self) -> MultiModalDataParser:
        return SoftTokenParser()

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": 1, "video": 1}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        q = int(getattr(self.get_hf_config(), NUM_QUERIES_KEY))
        return {"audio": q, "video": q}


class MllmdrDummyInputsBuilder(BaseDummyInputsBuilder[MllmdrProcessingInfo]):
    """Profiling inputs: the placeholders with zero soft tokens."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return "".join(PLACEHOLDERS[m] * mm_counts.get(m, 0) for m in MODALITIES)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any
    ) -> dict[str, Any]:
        cfg = self.info.get_hf_config()
        q, dims = int(getattr(cfg, NUM_QUERIES_KEY)), _input_dims(cfg)
        return {m: [torch.zeros(q, dims[m]) for _ in range(mm_counts.get(m, 0))] for m in MODALITIES}


class MllmdrMultiModalProcessor(BaseMultiModalProcessor[MllmdrProcessingInfo]):
    """Soft tokens become ``{audio,video}_embeds``; each placeholder expands to its item's length."""

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        cfg = self.info.get_hf_config()
        q, dims = int(getattr(cfg, NUM_QUERIES_KEY)), _input_dims(cfg)
        out = {}
        for modality in MODALITIES:
            items = hf_data.get(f"{modality}_soft")
            if not items:
                continue
            d = dims[modality]
            for t in items:  # type: ignore[attr-defined]
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != (q, d):
                    shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ValueError(f"{modality} soft tokens must be ({q}, {d}), got {shape}")
            out[f"{modality}_embeds"] = torch.stack(list(items))  # type: ignore[call-overload]  # (N, Q, d)
        return BatchFeature(out)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, Any]:
        return {f"{m}_embeds": MultiModalFieldConfig.batched(m) for m in MODALITIES}

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        ids = _token_ids(self.info.get_hf_config())
        updates = []
        for modality in MODALITIES:
            if modality not in mm_items:
                continue
            items = mm_items[modality]

            def replacement(item_idx: int, items: Any = items, tok: int = ids[modality]) -> list[int]:
                return [tok] * int(items.get_feature_size(item_idx))

            updates.append(
                PromptReplacement(modality=modality, target=[ids[modality]], replacement=replacement)
            )
        return updates


@MULTIMODAL_REGISTRY.register_processor(
    MllmdrMultiModalProcessor, info=MllmdrProcessingInfo, dummy_inputs=MllmdrDummyInputsBuilder
)
class MllmdrLlamaForCausalLM(LlamaForCausalLM, SupportsMultiModal):
    """vLLM's Llama taking the LQ-formers' soft tokens at the modality placeholders."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        return PLACEHOLDERS.get(modality)

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = vllm_config.model_config.hf_config
        self.configure_mm_token_handling(int(config.vocab_size), list(_token_ids(config).values()))
        # a plain dict: not parameters of the vLLM model (its loader checks those against the checkpoint)
        self.projections = load_projections(vllm_config.model_config.model)

    def get_language_model(self) -> torch.nn.Module:
        return self.model

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        """The soft tokens, (Q, d) per item, in prompt order (audio before video): as sent, or the sent
        LQ-former outputs through the export's projection (fp32, as in-process)."""
        weight = self.model.embed_tokens.weight
        out: list[torch.Tensor] = []
        for modality in MODALITIES:
            data = kwargs.get(f"{modality}_embeds")
            if data is None:
                continue
            items = (
                list(data) if isinstance(data, (list, tuple)) else list(torch.unbind(torch.as_tensor(data)))
            )
            proj = self.projections.get(modality)
            if proj is not None:
                proj.to(weight.device)
                with torch.no_grad():
                    items = [proj(t.to(weight.device, torch.float32)) for t in items]
            out.extend(t.to(weight.dtype) for t in items)
        return out

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: Any = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the soft tokens scattered in (``SupportsMultiModal``'s merge)."""
        text = self.model.embed_input_ids
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return text(input_ids)
        from vllm.model_executor.models.utils import _merge_multimodal_embeddings

        assert is_multimodal is not None
        embeds = self._embed_text_input_ids(input_ids, text, is_multimodal=is_multimodal)
        merged: torch.Tensor = _merge_multimodal_embeddings(
            inputs_embeds=embeds, multimodal_embeddings=multimodal_embeddings, is_multimodal=is_multimodal
        )
        return merged


def load_maa_head(model_dir: str) -> torch.nn.Module:
    """The bundle's MAA head from the export (shapes give its config)."""
    from safetensors.torch import load_file

    from mllmdr_core.config import MAAConfig
    from mllmdr_core.model.maa import MAAHead

    state = load_file(str(Path(model_dir) / MAA_WEIGHTS_NAME))
    heads, head_dim = state["score_weight"].shape
    head = MAAHead(
        MAAConfig(num_heads=int(heads), hidden=int(state["mlp.0.weight"].shape[0])), heads * head_dim
    )
    head.load_state_dict(state, strict=True)
    return head.eval()


class MAAPooler(Pooler):
    """Pools each prompt's final hidden states with the MAA head: one score per prompt, (1,) float32."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def get_supported_tasks(self) -> set[str]:
        return {"embed"}

    def forward(self, hidden_states: torch.Tensor, pooling_metadata: Any) -> list[torch.Tensor]:
        cursor = pooling_metadata.get_pooling_cursor()
        if cursor.is_partial_prefill():
            raise RuntimeError("MAA pooling needs the whole prompt in one step (no chunked prefill)")
        out = []
        start = 0
        for length in cursor.prompt_lens_cpu.tolist():
            h = hidden_states[start : start + int(length)].float().unsqueeze(0)  # (1, L, d)
            start += int(length)
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)  # (1, L)
            out.append(self.head.to(h.device)(h, mask).float())  # (1,)
        return out


class MllmdrLlamaMAAModel(MllmdrLlamaForCausalLM):
    """Pooling variant: the same model and soft-token handling, the MAA score instead of text."""

    is_pooling_model = True

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.pooler = MAAPooler(load_maa_head(vllm_config.model_config.model))

    def load_weights(self, weights: Any) -> set[str]:
        loaded: set[str] = super().load_weights(weights)
        return loaded | {f"pooler.head.{n}" for n, _ in self.pooler.head.named_parameters()}
