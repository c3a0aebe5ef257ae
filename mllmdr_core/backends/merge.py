"""Export a model for vLLM serving: LoRA merged into the base LLM, saved as a plain HF model dir.

Why merge: vLLM's ``--enable-lora`` wraps ``embed_tokens`` and, with ``--enable-prompt-embeds``, a
Llama crashes under concurrent requests (``einsum(): subscript b has size …``, then every request
answers 500 and the server exits; see ``shared/reference/method-facts.md``). A merged model has no
adapters, so vLLM serves it as an ordinary Llama; it also saves the LoRA matmuls per token.

The export dir holds what vLLM loads (``config.json``, ``model.safetensors``, tokenizer files) plus
what the stream server needs to build prompt embeddings *locally* without loading the whole LLM:

- ``mllmdr/embed_tokens.safetensors``: the input embedding table (vocab, d), key ``weight`` (a
  sub-folder, since vLLM would load a top-level ``*.safetensors`` as weights);
- ``mllmdr_serving.json``: manifest (format, hidden size, vocab, dtype, LoRA facts, source bundle id,
  sha256 of every file), read by :func:`load_serving_manifest` / ``VLLMBackend.from_export``.

The LQ-former, MAA head and feature extractors stay with the bundle on the stream server; the MAA score
is therefore not available from vLLM (``ItemOutput.maa_score`` is ``None``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mllmdr_core.backends.vllm_plugin import (
    ARCHITECTURE,
    AUDIO_INPUT_DIM_KEY,
    AUDIO_TOKEN_KEY,
    MAA_WEIGHTS_NAME,
    NUM_QUERIES_KEY,
    PROJECTION_WEIGHTS_NAME,
    RAW_CHAT_TEMPLATE,
    VIDEO_INPUT_DIM_KEY,
    VIDEO_TOKEN_KEY,
)
from mllmdr_core.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from mllmdr_core.bundle import LoadedBundle

SERVING_FORMAT = "mllmdr-vllm-serving-v1"
MANIFEST_NAME = "mllmdr_serving.json"
# In a sub-folder: vLLM loads every top-level *.safetensors file as model weights.
EMBED_TABLE_NAME = "mllmdr/embed_tokens.safetensors"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# vLLM's CPU attention kernels support these head sizes (and larger multiples of 16); 16 crashes it.
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@dataclass(frozen=True)
class ServingManifest:
    """What ``mllmdr_serving.json`` records about an exported model."""

    format: str
    model_type: str
    hidden_size: int
    vocab_size: int
    num_hidden_layers: int
    head_dim: int
    dtype: str
    lora_merged: bool
    lora_target_modules: tuple[str, ...]
    bundle_id: str | None
    files: dict[str, str]  # path relative to the export dir → sha256

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merge_lora(llm: nn.Module, *, in_place: bool = False) -> tuple[PreTrainedModel, tuple[str, ...]]:
    """Return a plain ``PreTrainedModel`` with any peft LoRA merged in, and the adapted module names.

    ``in_place=False`` (default) merges a deep copy, leaving ``llm`` (still used for training or the
    embedded backend) untouched; pass ``True`` for 8B models where a copy would not fit in memory.
    """
    from peft import PeftModel  # local: peft is heavy and only needed when merging

    if isinstance(llm, PeftModel):
        peft_cfg = llm.peft_config[llm.active_adapter]
        targets = tuple(sorted(str(t) for t in (getattr(peft_cfg, "target_modules", None) or ())))
        model = llm if in_place else copy.deepcopy(llm)
        merged = model.merge_and_unload()
        if not isinstance(merged, PreTrainedModel):
            raise ConfigError(f"merging LoRA gave {type(merged).__name__}, not a transformers model")
        return merged, targets
    if isinstance(llm, PreTrainedModel):
        return (llm if in_place else copy.deepcopy(llm)), ()
    raise ConfigError(f"cannot export {type(llm).__name__}: expected a transformers or peft model")


def export_merged_llm(
    llm: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    bundle_id: str | None = None,
    in_place: bool = False,
    plugin_soft_tokens: int | None = None,
    maa_head: nn.Module | None = None,
    soft_token_projections: Mapping[str, nn.Module] | None = None,
) -> Path:
    """Merge LoRA into ``llm`` and write a vLLM-servable HF model dir at ``out_dir``.

    ``dtype`` ("float32" | "bfloat16" | "float16") casts the saved weights (serve 8B models in bf16);
    ``None`` keeps the model's dtype. ``plugin_soft_tokens`` (the LQ-formers' query count) exports for
    the project's vLLM plugin (:mod:`mllmdr_core.backends.vllm_plugin`): config ``architectures`` names
    the plugin's model, with the placeholder token ids and query count, and the tokenizer gets a chat
    template that passes the prompt through verbatim; ``maa_head`` (the bundle's) is saved for the
    plugin's pooling variant, which serves the MAA score; ``soft_token_projections`` (``{"audio":
    LQFormer.proj, "video": ...}``, plugin exports only) are saved so that the plugin projects the
    LQ-formers' (Q, d_lq) outputs itself and clients send those instead of (Q, d_llm). Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged, targets = merge_lora(llm, in_place=in_place)
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ConfigError(f"unknown export dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        nn.Module.to(merged, _DTYPES[dtype])  # in place (transformers' typed .to wrapper confuses mypy)
    merged.eval()
    cfg = merged.config
    hidden = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    emb = merged.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ConfigError(f"input embeddings are {type(emb).__name__}, expected nn.Embedding")
    if len(tokenizer) > emb.num_embeddings:
        raise ConfigError(
            f"tokenizer has {len(tokenizer)} tokens but the embedding table only {emb.num_embeddings}"
        )

    if plugin_soft_tokens is not None:
        _configure_for_plugin(merged, tokenizer, plugin_soft_tokens)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if plugin_soft_tokens is not None:  # save_pretrained writes the class name: name the plugin's
        config_path = out / "config.json"
        config = json.loads(config_path.read_text())
        config["architectures"] = [ARCHITECTURE]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (out / "chat_template.jinja").write_text(RAW_CHAT_TEMPLATE)
        if soft_token_projections is not None:
            _save_projections(out, config, soft_token_projections)
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if maa_head is not None:
        (out / MAA_WEIGHTS_NAME).parent.mkdir(exist_ok=True)
        state = {
            k: v.detach().to("cpu", torch.float32).contiguous() for k, v in maa_head.state_dict().items()
        }
        save_file(state, str(out / MAA_WEIGHTS_NAME))
    # (vocab, d) table, contiguous copy so the file holds exactly this tensor.
    table_path = out / EMBED_TABLE_NAME
    table_path.parent.mkdir(exist_ok=True)
    save_file({"weight": emb.weight.detach().to("cpu").contiguous().clone()}, str(table_path))

    files = {
        p.relative_to(out).as_posix(): _sha256(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    manifest = ServingManifest(
        format=SERVING_FORMAT,
        model_type=str(getattr(cfg, "model_type", "")),
        hidden_size=hidden,
        vocab_size=int(emb.num_embeddings),
        num_hidden_layers=int(cfg.num_hidden_layers),
        head_dim=head_dim,
        dtype=str(next(merged.parameters()).dtype).removeprefix("torch."),
        lora_merged=bool(targets),
        lora_target_modules=targets,
        bundle_id=bundle_id,
        files=files,
    )
    (out / MANIFEST_NAME).write_text(manifest.to_json() + "\n")
    return out


def _configure_for_plugin(merged: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: int) -> None:
    """Point ``merged.config`` at the plugin's architecture (a copy of the config: the source is kept)."""
    from mllmdr_core.model.tokenizer import modality_token_ids

    if queries < 1:
        raise ConfigError(f"plugin_soft_tokens must be >= 1, got {queries}")
    audio_id, video_id = modality_token_ids(tokenizer)
    cfg = copy.deepcopy(merged.config)
    setattr(cfg, AUDIO_TOKEN_KEY, int(audio_id))
    setattr(cfg, VIDEO_TOKEN_KEY, int(video_id))
    setattr(cfg, NUM_QUERIES_KEY, int(queries))
    merged.config = cfg


def _save_projections(out: Path, config: dict[str, object], projections: Mapping[str, nn.Module]) -> None:
    """``projections`` (fp32) into the export; their input widths into ``config``."""
    dims = {"audio": AUDIO_INPUT_DIM_KEY, "video": VIDEO_INPUT_DIM_KEY}
    if sorted(projections) != sorted(dims):
        raise ConfigError(f"soft_token_projections needs audio and video, got {sorted(projections)}")
    state: dict[str, torch.Tensor] = {}
    for modality, module in projections.items():
        first = next(iter(module.parameters()))  # Linear(d_lq → proj_hidden) weight
        config[dims[modality]] = int(first.shape[1])
        for k, v in module.state_dict().items():
            state[f"{modality}.{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    (out / PROJECTION_WEIGHTS_NAME).parent.mkdir(exist_ok=True)
    save_file(state, str(out / PROJECTION_WEIGHTS_NAME))


def export_bundle(
    bundle_path: str | Path, out_dir: str | Path, *, dtype: str | None = None, plugin: bool = False
) -> Path:
    """Load a model bundle (``mllmdr_core.bundle``) and export its LLM, LoRA merged, for vLLM
    (``plugin``: for the project's vLLM plugin, soft tokens sent as multimodal embeddings)."""
    from mllmdr_core.bundle import load_bundle  # local: keeps this module importable on its own

    return export_loaded(load_bundle(bundle_path), out_dir, dtype=dtype, plugin=plugin, in_place=True)


def export_loaded(
    loaded: LoadedBundle,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    plugin: bool = False,
    in_place: bool = False,
) -> Path:
    """:func:`export_bundle` for a bundle already loaded (with its LLM weights). ``in_place``: merge the
    LoRA into ``loaded``'s own LLM (no copy; ``loaded`` is spent); else a copy is exported and ``loaded``
    stays usable (e.g. as the embedded reference in ``bench/vllm_native.py``)."""
    llm = getattr(loaded.model, "llm", None)
    if llm is None:
        raise BundleError(f"bundle {loaded.path} has no LLM to export")
    return export_merged_llm(
        llm,
        loaded.tokenizer,
        out_dir,
        dtype=dtype,
        bundle_id=loaded.bundle_id,
        in_place=in_place,
        plugin_soft_tokens=loaded.config.lqformer.num_queries if plugin else None,
        maa_head=loaded.model.maa if plugin else None,
        soft_token_projections=(
            {"audio": loaded.model.audio_lqformer.proj, "video": loaded.model.visual_lqformer.proj}
            if plugin
            else None
        ),
    )


def load_serving_manifest(export_dir: str | Path, *, verify: bool = False) -> ServingManifest:
    """Read ``mllmdr_serving.json``; with ``verify`` check every file's sha256 (``BundleError``)."""
    root = Path(export_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not an mllmdr vLLM export: {MANIFEST_NAME} is missing")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        data["lora_target_modules"] = tuple(data["lora_target_modules"])
        manifest = ServingManifest(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path} is unreadable: {exc}") from exc
    if manifest.format != SERVING_FORMAT:
        raise BundleError(f"{path}: format {manifest.format!r}, expected {SERVING_FORMAT!r}")
    if verify:
        for name, digest in manifest.files.items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"{root}: {name} listed in {MANIFEST_NAME} is missing")
            if _sha256(f) != digest:
                raise BundleError(f"{root}: sha256 of {name} does not match {MANIFEST_NAME}")
    return manifest


def load_embed_table(export_dir: str | Path) -> nn.Embedding:
    """The exported input embedding table as a frozen ``nn.Embedding`` (vocab, d)."""
    path = Path(export_dir) / EMBED_TABLE_NAME
    if not path.is_file():
        raise BundleError(f"{path} is missing: re-export the model with mllmdr_core.backends.merge")
    weight = load_file(str(path))["weight"]  # (vocab, d)
    emb = nn.Embedding.from_pretrained(weight, freeze=True)
    return emb


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m mllmdr_core.backends.merge BUNDLE OUT_DIR [--dtype bfloat16]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Export a bundle's LLM (LoRA merged) for vLLM serving.")
    parser.add_argument("bundle")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None)
    parser.add_argument("--plugin", action="store_true", help="for the mllmdr vLLM plugin (soft tokens)")
    args = parser.parse_args(argv)
    out = export_bundle(args.bundle, args.out_dir, dtype=args.dtype, plugin=args.plugin)
    print(f"exported {out} ({load_serving_manifest(out).hidden_size}-d, LoRA merged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
