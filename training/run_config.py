"""Run configuration for the training pipeline: one YAML file holds every hyper-parameter.

``model`` is an :class:`~mllmdr_core.config.MllmdrConfig` dict (the bundle's model config); the other
sections configure the corpus, feature extraction, the demo LM pre-training, both training stages,
evaluation and export. ``load_run_config`` reads a YAML file (``training/configs/*.yaml`` by name or
any path) and applies ``key.sub=value`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mllmdr_core.config import MllmdrConfig, from_dict, to_dict
from mllmdr_core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class CorpusConfig:
    """Where sessions come from: ``kind`` "synth" (generated into ``workdir/corpus``) or a dataset reader."""

    kind: str = "synth"  # "synth" | "daic-woz" | "e-daic" | "cmdc"
    path: str | None = None  # dataset root (None for synth: workdir/corpus)
    n: int = 300  # synth: number of sessions
    limit: int | None = None  # use only the first N sessions (by id) of the corpus
    train_limit: int | None = None  # use only the first N train sessions (dev/test kept whole)
    seed: int = 0
    fps: float = 5.0  # synth: video frame rate
    workers: int = 2  # synth: parallel processes
    synth: dict[str, Any] = field(default_factory=dict)  # more training.synth.SynthConfig fields
    teacher: str = "template"  # rationale teacher: "template" | "openai"
    teacher_url: str | None = None
    teacher_model: str | None = None
    strict: bool = False  # stop at a malformed session instead of skipping it (reason in the summary)


@dataclass
class FeaturesConfig:
    workers: int = 2
    limit: int | None = None  # only the first N sessions (debugging)
    beside_lm: bool = True  # run_all: pre-train the demo LM (one core) while the workers extract


@dataclass
class LMPretrainConfig:
    """Demo only: train the small Llama from scratch on corpus text (no pretrained weights here)."""

    enabled: bool = False
    vocab_size: int = 2000
    epochs: int = 4
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_len: int = 384
    warmup_steps: int = 20
    variants: tuple[str, ...] = ("all", "text", "av")  # prompt variants of each item in the text


@dataclass
class StageConfig:
    """One training stage. Learning rates per parameter group (paper: LLM 1e-5, projection 5e-4,
    LQ-former 1e-4, MAA 1e-4)."""

    epochs: int = 8
    batch_size: int = 4
    lr_llm: float = 1e-5
    lr_projection: float = 5e-4
    lr_lqformer: float = 1e-4
    lr_maa: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    alpha: float | None = None  # fixed LM-loss weight; None: a = epoch / num_epochs (stage 2)
    checkpoint_every: int = 200  # steps between mid-epoch checkpoints
    max_steps_per_epoch: int | None = None
    # LM-loss weight of the item-score digit in "Evaluation Result: N" (1 = the paper's plain mean over
    # target tokens; the digit is 1 of ~60 target tokens, yet the reported item score is read from it)
    score_token_weight: float = 1.0


@dataclass
class EvalConfig:
    split: str = "test"
    max_sessions: int | None = None
    ablations: tuple[str, ...] = ("all", "text", "av", "no_lqformer")
    batch_items: int = 8
    workers: int = 1  # processes sharing the ablations (2: one worker process beside the main one)
    rescore_test: bool = False  # score a test split the ledger says was scored before (report records it)


@dataclass
class SelectConfig:
    """Options chosen on the DEV split by training one model per value (``training/select.py``)."""

    indicators_in_prompt: tuple[bool, ...] = ()  # e.g. (false, true); empty: the model section decides
    # decode-time (no retraining): every trained variant's bundle is scored on dev once per value
    grounded_decoding: tuple[bool, ...] = ()
    workers: int = 2  # processes training the variants side by side (each with ``threads`` torch threads)


@dataclass
class ExportConfig:
    # not written into the bundle any more: provenance comes from the data used (pipeline.training_provenance)
    training_data: str = "synthetic"
    non_clinical: bool = True
    out: str | None = None  # bundle directory (None: workdir/bundle)


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    threads: int = 1  # torch threads; 1 is fastest on a shared 2-core machine
    workdir: str = "runs/run"
    model: dict[str, Any] = field(default_factory=dict)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    lm_pretrain: LMPretrainConfig = field(default_factory=LMPretrainConfig)
    stage1: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, alpha=1.0))
    stage2: StageConfig = field(default_factory=StageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def model_config(self) -> MllmdrConfig:
        return MllmdrConfig.from_dict(self.model)

    @property
    def work(self) -> Path:
        return Path(self.workdir)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def resolve_config_path(name_or_path: str) -> Path:
    """``demo`` → ``training/configs/demo.yaml``; an existing path is returned as is."""
    path = Path(name_or_path)
    if path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(f"no run config {name_or_path!r} (looked for {path} and {candidate})")


def load_run_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config and apply ``a.b=value`` overrides (values parsed as YAML)."""
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, _, raw = item.partition("=")
        _set_path(data, key.strip(), yaml.safe_load(raw))
    cfg = from_dict(RunConfig, data)
    cfg.model_config()  # validate the model section early (unknown keys raise ConfigError)
    return cfg
