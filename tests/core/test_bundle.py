from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmdr_core.backends.base import ItemRequest
from mllmdr_core.backends.transformers_backend import TransformersBackend
from mllmdr_core.bundle import LoadedBundle, is_bundle, load_bundle, read_manifest, save_bundle
from mllmdr_core.errors import BundleError, FeatureSpecError
from mllmdr_core.features.encoder import build_hubert
from mllmdr_core.features.spec import FeatureSpec, extractor_spec
from mllmdr_core.model.mllm import MLlmDR
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.testing import build_tiny_bundle, tiny_config, tiny_corpus

PROMPTS = [
    'Rate PHQ-8 item "Sleep".\nAudio: <AudioHere>\nVideo: <VideoHere>\nReply',
    "Mood? Video: <VideoHere>",
]


def _trained_looking_model() -> tuple[MLlmDR, FeatureSpec]:
    """A tiny model whose LoRA B matrices are non-zero, so the round trip tests the adapter too."""
    cfg = tiny_config()
    spec = extractor_spec(cfg)
    torch.manual_seed(3)
    model = MLlmDR(cfg, spec.audio_dim, spec.visual_dim, train_tokenizer(tiny_corpus(), vocab_size=600))
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval(), spec


def _save(model: MLlmDR, spec: FeatureSpec, path: Path, **kw: object) -> Path:
    cfg = model.config
    args: dict[str, object] = {
        "model": model,
        "tokenizer": model.tokenizer,
        "config": cfg,
        "audio_encoder": build_hubert(cfg.audio, seed=1),
        "feature_spec": spec,
        "training_data": "synthetic",
        "non_clinical": True,
        "metrics": {"mae": 1.5},
    }
    args.update(kw)
    return save_bundle(path, **args)  # type: ignore[arg-type]


def _outputs(model: MLlmDR) -> tuple[list[torch.Tensor], list[tuple[str, float | None]]]:
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(1, 30, model.audio_dim, generator=g)
    visual = torch.randn(1, 12, model.visual_dim, generator=g)
    with torch.no_grad():
        embeds = model.prompt_embeds(PROMPTS, audio, None, visual, None)
    outs = TransformersBackend(model, max_new_tokens=6).generate(
        [ItemRequest(str(i), e) for i, e in enumerate(embeds)]
    )
    return embeds, [(o.text, o.maa_score) for o in outs]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLlmDR, Path]:
    model, spec = _trained_looking_model()
    return model, _save(model, spec, tmp_path_factory.mktemp("b") / "bundle")


def test_round_trip_gives_identical_outputs(saved: tuple[MLlmDR, Path]) -> None:
    model, path = saved
    loaded = load_bundle(path)
    assert isinstance(loaded, LoadedBundle)
    embeds_a, outs_a = _outputs(model)
    embeds_b, outs_b = _outputs(loaded.model)
    for a, b in zip(embeds_a, embeds_b, strict=True):
        assert torch.equal(a, b)
    assert outs_a == outs_b
    for (name, p), (name2, q) in zip(model.named_parameters(), loaded.model.named_parameters(), strict=True):
        assert name == name2 and torch.equal(p, q), name
    assert loaded.audio_encoder is not None
    wav = torch.randn(1, 16000)
    ref = build_hubert(model.config.audio, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded.audio_encoder(wav).last_hidden_state, ref(wav).last_hidden_state)
    assert loaded.config == model.config and loaded.feature_spec == extractor_spec(model.config)
    assert loaded.non_clinical and loaded.training_data == "synthetic"
    assert loaded.manifest["metrics"] == {"mae": 1.5}


def test_without_audio_encoder_the_model_is_the_same(saved: tuple[MLlmDR, Path]) -> None:
    """``audio_encoder=False`` (the server's model worker): no HuBERT, the same LLM and heads."""
    model, path = saved
    loaded = load_bundle(path, audio_encoder=False)
    assert loaded.audio_encoder is None
    assert _outputs(loaded.model)[1] == _outputs(model)[1]


def test_manifest_lists_every_file_and_versions(saved: tuple[MLlmDR, Path]) -> None:
    _, path = saved
    manifest = read_manifest(path)
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(manifest["files"]) == files
    assert {"heads.safetensors", "llm/model.safetensors", "lora/adapter_model.safetensors"} <= files
    assert {"tokenizer/tokenizer.json", "audio_encoder/model.safetensors"} <= files
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert manifest["versions"]["torch"] == torch.__version__
    assert len(manifest["bundle_id"]) == 12 and manifest["format_version"] == 1
    assert is_bundle(path) and not is_bundle(path / "lora")


def test_same_contents_same_id(saved: tuple[MLlmDR, Path], tmp_path: Path) -> None:
    model, path = saved
    again = _save(model, extractor_spec(model.config), tmp_path / "again")
    assert read_manifest(again)["bundle_id"] == read_manifest(path)["bundle_id"]
    other = _save(model, extractor_spec(model.config), tmp_path / "other", training_data="E-DAIC train")
    assert read_manifest(other)["bundle_id"] != read_manifest(path)["bundle_id"]


@pytest.mark.parametrize(
    "target",
    [
        "heads.safetensors",
        "lora/adapter_model.safetensors",
        "llm/model.safetensors",
        "tokenizer/tokenizer.json",
    ],
)
def test_tampered_file_is_refused_by_name(saved: tuple[MLlmDR, Path], tmp_path: Path, target: str) -> None:
    import shutil

    _, path = saved
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    data = bytearray((copy / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / target).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{target}: sha256 mismatch"):
        load_bundle(copy)


def test_missing_extra_and_edited_manifest_are_refused(saved: tuple[MLlmDR, Path], tmp_path: Path) -> None:
    import shutil

    _, path = saved
    copy = Path(shutil.copytree(path, tmp_path / "c1"))
    (copy / "lora" / "adapter_config.json").unlink()
    with pytest.raises(BundleError, match=r"adapter_config.json: file listed in bundle.json is missing"):
        load_bundle(copy)
    copy = Path(shutil.copytree(path, tmp_path / "c2"))
    (copy / "llm" / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"extra.safetensors: file not listed"):
        load_bundle(copy)
    copy = Path(shutil.copytree(path, tmp_path / "docs"))  # the model card and report are not hashed ...
    (copy / "README.md").write_text("---\nnon_clinical: true\n---\n# card\n")
    (copy / "report.json").write_text('{"test": {}}')
    assert load_bundle(copy).bundle_id == load_bundle(path).bundle_id
    (copy / "llm" / "README.md").write_text("x")  # ... only at the top level
    with pytest.raises(BundleError, match=r"llm/README.md: file not listed"):
        load_bundle(copy)
    copy = Path(shutil.copytree(path, tmp_path / "c3"))
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["non_clinical"] = False
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"bundle.json: bundle_id does not match"):
        load_bundle(copy)
    (copy / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"bundle.json: unreadable"):
        load_bundle(copy)
    with pytest.raises(BundleError, match=r"missing bundle manifest"):
        load_bundle(tmp_path / "nowhere")


def test_unsupported_feature_spec(tmp_path: Path) -> None:
    model, spec = _trained_looking_model()
    openface = FeatureSpec("hubert+prosody-v1", spec.audio_dim, "openface-pose-gaze-au-v1", spec.visual_dim)
    path = _save(model, openface, tmp_path / "of")
    with pytest.raises(FeatureSpecError):
        load_bundle(path)
    loaded = load_bundle(path, check_features=False)
    assert loaded.feature_spec == openface
    with pytest.raises(BundleError, match="do not match the model"):
        _save(
            model,
            FeatureSpec(spec.audio_spec, spec.audio_dim + 1, spec.visual_spec, spec.visual_dim),
            tmp_path / "x",
        )


def test_refuses_to_overwrite_a_non_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not empty"):
        build_tiny_bundle(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    first = build_tiny_bundle(tmp_path / "b")
    assert build_tiny_bundle(tmp_path / "b") == first  # replacing a bundle is fine
    assert load_bundle(first).model.audio_dim == extractor_spec(tiny_config()).audio_dim
    assert np.isfinite(read_manifest(first)["d_llm"])


def test_tiny_bundle_takes_a_config_variant_and_label(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg.llm.max_new_tokens = 7
    path = build_tiny_bundle(tmp_path / "v", config=cfg, training_data="none (bench)")
    loaded = load_bundle(path)
    assert loaded.config.llm.max_new_tokens == 7 and loaded.training_data == "none (bench)"


def test_referenced_llm_and_encoder_are_not_copied(tmp_path: Path) -> None:
    """A pretrained base (local path here; an HF id works the same) is referenced, not stored."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = tiny_config()
    tokenizer = train_tokenizer(tiny_corpus(), vocab_size=600)
    torch.manual_seed(5)
    base_cfg = LlamaConfig(vocab_size=len(tokenizer) - 7, **cfg.llm.llama)  # fewer rows than the tokenizer
    LlamaForCausalLM(base_cfg).save_pretrained(tmp_path / "base-llm")
    build_hubert(cfg.audio, seed=2).save_pretrained(tmp_path / "base-hubert")
    cfg.llm.model = str(tmp_path / "base-llm")
    cfg.audio.model = str(tmp_path / "base-hubert")
    spec = extractor_spec(cfg)
    torch.manual_seed(6)
    model = MLlmDR(cfg, spec.audio_dim, spec.visual_dim, tokenizer).eval()
    emb = model.llm.get_input_embeddings().weight
    assert emb.shape[0] == len(tokenizer) and torch.equal(emb[-1], emb[: len(tokenizer) - 7].mean(0))
    path = save_bundle(
        tmp_path / "bundle",
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        audio_encoder=build_hubert(cfg.audio),
        feature_spec=spec,
        training_data="synthetic",
        non_clinical=True,
    )
    manifest = read_manifest(path)
    assert manifest["llm_source"] == "reference" and manifest["audio_encoder_source"] == "reference"
    assert not (path / "llm").exists() and not (path / "audio_encoder").exists()
    loaded = load_bundle(path)
    assert _same(loaded.model, model)


def _same(a: MLlmDR, b: MLlmDR) -> bool:
    ea, oa = _outputs(a)
    eb, ob = _outputs(b)
    return all(torch.equal(x, y) for x, y in zip(ea, eb, strict=True)) and oa == ob
