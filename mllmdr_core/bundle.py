"""Model bundle: one directory that rebuilds the whole assessor, verified file by file.

Layout::

    bundle.json                  manifest (below)
    tokenizer/                   tokenizer.json, tokenizer_config.json
    heads.safetensors            audio_lqformer.*, visual_lqformer.*, maa.*
    lora/                        peft adapter (adapter_config.json, adapter_model.safetensors)
    llm/                         config.json + model.safetensors — only when ``llm.model`` is None
                                 (random-init / self-trained small LLM); else the base LLM is
                                 referenced by ``config.llm.model`` (local path or HF id)
    audio_encoder/               config.json + model.safetensors — only when ``audio.model`` is None

``bundle.json`` holds ``format``/``format_version``, ``bundle_id`` (first 12 hex of the sha256 of the
canonical manifest without ``bundle_id``/``created_at``: the same contents give the same id), the full
``MllmdrConfig`` dict, the feature spec, feature/LLM widths, package versions, the training-data label,
the ``non_clinical`` flag, metrics, and the sha256 of every other file. :func:`load_bundle` refuses a
bundle with a missing, altered or unlisted file (``BundleError`` naming it) or a feature spec our
extractors cannot produce (``FeatureSpecError``).

The bundle's documents, ``README.md`` (model card) and ``report.json`` (its evaluation), describe the
hashed contents and are written after the bundle is scored, so they stay outside the hash: they may be
absent or rewritten without changing ``bundle_id``; ``report.json`` names the ``bundle_id`` it scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import BundleError, ConfigError
from mllmdr_core.features.spec import FeatureSpec, ensure_supported
from mllmdr_core.model.lora import quiet_peft
from mllmdr_core.model.mllm import MLlmDR

FORMAT = "mllmdr-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
DOC_FILES = ("README.md", "report.json")  # written after scoring: not hashed (see above)
HEADS = "heads.safetensors"
HEAD_PREFIXES = ("audio_lqformer.", "visual_lqformer.", "maa.")
_PACKAGES = ("torch", "transformers", "peft", "tokenizers", "safetensors", "mllmdr-live")


@dataclass
class LoadedBundle:
    config: MllmdrConfig
    model: MLlmDR
    tokenizer: PreTrainedTokenizerBase
    manifest: dict[str, Any]
    audio_encoder: HubertModel | None
    feature_spec: FeatureSpec
    bundle_id: str
    path: Path | None = None

    @property
    def non_clinical(self) -> bool:
        return bool(self.manifest.get("non_clinical", True))

    @property
    def training_data(self) -> str:
        return str(self.manifest.get("training_data", "unknown"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_id(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("bundle_id", "created_at")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses shared storage (tied weights): give each later alias its own copy."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        out[key] = tensor.detach().clone() if ident in seen else tensor.detach().contiguous()
        seen.add(ident)
    save_file(out, str(path))


def _base_llm(model: MLlmDR) -> PreTrainedModel:
    llm = model.llm
    base = llm.get_base_model() if isinstance(llm, PeftModel) else llm
    assert isinstance(base, PreTrainedModel)
    return base


def _base_llm_state(model: MLlmDR) -> dict[str, torch.Tensor]:
    """Base LLM weights without the LoRA adapters (peft's ``.base_layer.`` names undone)."""
    base = _base_llm(model)
    return {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}


def save_bundle(
    path: str | Path,
    *,
    model: MLlmDR,
    tokenizer: PreTrainedTokenizerBase,
    config: MllmdrConfig,
    audio_encoder: HubertModel | None,
    feature_spec: FeatureSpec,
    training_data: str,
    non_clinical: bool,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory (built beside ``path``, then moved in). Returns ``path``.

    ``path`` must be absent or an empty directory; with ``overwrite`` it may also be an existing bundle.
    """
    dest = Path(path)
    if dest.exists() and any(dest.iterdir()) and not (overwrite and (dest / MANIFEST).is_file()):
        raise BundleError(
            f"{dest} exists and is not empty (overwrite=True replaces an existing bundle, nothing else)"
        )
    if feature_spec.audio_dim != model.audio_dim or feature_spec.visual_dim != model.visual_dim:
        raise BundleError(
            f"feature spec dims ({feature_spec.audio_dim}, {feature_spec.visual_dim}) do not match the model "
            f"({model.audio_dim}, {model.visual_dim})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # padding state left by the last call would change the file's hash
            backend.no_padding()
            backend.no_truncation()
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        heads = {k: v for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}
        _save_tensors(heads, tmp / HEADS)
        if isinstance(model.llm, PeftModel):
            with quiet_peft():
                model.llm.save_pretrained(str(tmp / "lora"), save_embedding_layers=False)
        llm_source = "reference" if config.llm.model else "bundle"
        if llm_source == "bundle":
            (tmp / "llm").mkdir()
            base_cfg: PretrainedConfig = _base_llm(model).config
            base_cfg.to_json_file(str(tmp / "llm" / "config.json"))
            _save_tensors(_base_llm_state(model), tmp / "llm" / "model.safetensors")
        enc_source = "none"
        if audio_encoder is not None:
            enc_source = "reference" if config.audio.model else "bundle"
            if enc_source == "bundle":
                (tmp / "audio_encoder").mkdir()
                audio_encoder.config.to_json_file(str(tmp / "audio_encoder" / "config.json"))
                _save_tensors(audio_encoder.state_dict(), tmp / "audio_encoder" / "model.safetensors")
        files = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config.to_dict(),
            "feature_spec": dataclasses.asdict(feature_spec),
            "audio_dim": model.audio_dim,
            "visual_dim": model.visual_dim,
            "d_llm": model.d_llm,
            "llm_source": llm_source,
            "lora": isinstance(model.llm, PeftModel),
            "audio_encoder_source": enc_source,
            "training_data": training_data,
            "non_clinical": non_clinical,
            "metrics": metrics or {},
            "versions": _versions(),
            "files": files,
        }
        manifest["bundle_id"] = _bundle_id(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # empty, or a bundle being replaced (checked above)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` holds a bundle manifest (cheap; :func:`load_bundle` does the real checks)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse ``bundle.json`` (no hash checks)."""
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{file}: missing bundle manifest") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{file}: unreadable bundle manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{file}: not an {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{file}: bundle format_version {manifest.get('format_version')!r} is not supported "
            f"(this build reads {FORMAT_VERSION})"
        )
    return manifest


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Check every file against the manifest's sha256 and the bundle id; returns the manifest."""
    root = Path(path)
    manifest = read_manifest(root)
    files: dict[str, str] = manifest.get("files", {})
    for rel, digest in files.items():
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{file}: file listed in {MANIFEST} is missing")
        if sha256_file(file) != digest:
            raise BundleError(f"{file}: sha256 mismatch (file altered or corrupt)")
    for file in root.rglob("*"):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and rel != MANIFEST and rel not in files and rel not in DOC_FILES:
            raise BundleError(f"{file}: file not listed in {MANIFEST}")
    if _bundle_id(manifest) != manifest.get("bundle_id"):
        raise BundleError(f"{root / MANIFEST}: bundle_id does not match the manifest contents (edited?)")
    return manifest


def _load_state(module: torch.nn.Module, file: Path, prefix: str = "") -> None:
    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"{file}: unreadable tensors: {exc}") from exc
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{file}: weights do not fit the configured model: {exc}") from exc


def _llm_shell(root: Path, config: MllmdrConfig, manifest: dict[str, Any]) -> PreTrainedModel:
    """The LLM's architecture on the meta device: shapes (d_llm, vocab) without weights or LoRA."""
    source = str(root / "llm") if manifest["llm_source"] == "bundle" else str(config.llm.model)
    try:
        llm_cfg = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the base LLM config {source!r}: {exc}") from exc
    with torch.device("meta"):
        llm: PreTrainedModel = AutoModelForCausalLM.from_config(llm_cfg)
    return llm


def llm_params_loaded(model: MLlmDR) -> int:
    """LLM parameters held in memory (0 for a bundle loaded with ``llm_weights=False``)."""
    return sum(p.numel() for p in model.llm.parameters() if p.device.type != "meta")


def _load_llm(root: Path, config: MllmdrConfig, manifest: dict[str, Any]) -> PreTrainedModel:
    dtype = getattr(torch, config.llm.dtype)
    if manifest["llm_source"] == "bundle":
        llm_cfg = AutoConfig.from_pretrained(str(root / "llm"))
        llm: PreTrainedModel = AutoModelForCausalLM.from_config(llm_cfg).to(dtype)
        _load_state(llm, root / "llm" / "model.safetensors")
    else:
        try:
            llm = AutoModelForCausalLM.from_pretrained(str(config.llm.model), dtype=dtype)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot load the base LLM {config.llm.model!r}: {exc}") from exc
    if manifest.get("lora"):
        with quiet_peft():
            llm = PeftModel.from_pretrained(llm, str(root / "lora"), is_trainable=False)  # type: ignore[assignment]
    return llm


def load_bundle(
    path: str | Path, *, check_features: bool = True, llm_weights: bool = True, audio_encoder: bool = True
) -> LoadedBundle:
    """Verify and load a bundle. ``check_features=False`` skips the live-extractor check (dataset eval).

    ``llm_weights=False`` is for a backend that serves the LLM elsewhere and takes soft tokens
    (``SoftTokenBackend``, e.g. the vLLM plugin): the LLM is an empty shell on the meta device (no weights,
    no LoRA) and only the tokenizer, LQ-formers, MAA head and audio encoder are loaded.
    ``audio_encoder=False`` leaves the audio encoder out (``LoadedBundle.audio_encoder`` None): for a
    process that only assesses snapshots (the server's model worker) and never encodes audio.
    """
    root = Path(path)
    manifest = verify_bundle(root)
    try:
        config = MllmdrConfig.from_dict(manifest["config"])
        spec = FeatureSpec(**manifest["feature_spec"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise BundleError(f"{root / MANIFEST}: invalid config or feature spec: {exc}") from exc
    if check_features:
        ensure_supported(spec, config)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(root / "tokenizer"))
    llm = _load_llm(root, config, manifest) if llm_weights else _llm_shell(root, config, manifest)
    model_config = config
    if not llm_weights:  # no adapters on the shell
        no_lora = dataclasses.replace(config.llm.lora, r=0)
        model_config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, lora=no_lora))
    model = MLlmDR(model_config, int(manifest["audio_dim"]), int(manifest["visual_dim"]), tokenizer, llm=llm)
    heads = {k[: k.index(".")] for k in HEAD_PREFIXES}
    for name in sorted(heads):
        _load_state(getattr(model, name), root / HEADS, prefix=f"{name}.")
    model.eval()
    encoder: HubertModel | None = None
    source = manifest["audio_encoder_source"] if audio_encoder else None
    if source == "bundle":
        hc = HubertConfig.from_json_file(str(root / "audio_encoder" / "config.json"))
        encoder = HubertModel(hc)
        _load_state(encoder, root / "audio_encoder" / "model.safetensors")
        encoder.eval()
    elif source == "reference":
        from mllmdr_core.features.encoder import build_hubert

        encoder = build_hubert(config.audio)
    return LoadedBundle(
        config=config,
        model=model,
        tokenizer=tokenizer,
        manifest=manifest,
        audio_encoder=encoder,
        feature_spec=spec,
        bundle_id=str(manifest["bundle_id"]),
        path=root,
    )
