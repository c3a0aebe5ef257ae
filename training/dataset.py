"""Training examples: one per (session, PHQ-8 item).

The prompt is built by the live assessor's own builder, ``mllmdr_core.prompt.item_prompts``
(transcript → Q/A pairs → per item the most relevant pairs → ``prompt.build_item_prompt``), and the
target is ``prompt.format_target(score, rationale)``. Features come from the per-session ``.npz`` cache
written by :mod:`training.features`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.frames import FloatArray, TranscriptLine
from mllmdr_core.model.mllm import MultimodalExample
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.prompt import format_target
from mllmdr_core.prompt import item_prompts as build_item_prompts
from training.features import SessionFeatures, load_features
from training.teacher import cite_indicators

MODALITIES = ("all", "text", "av")  # which inputs an example shows the model


@dataclass(frozen=True)
class SessionLabels:
    """What the dataset needs from a session record (see ``training.data``)."""

    session_id: str
    split: str
    transcript: tuple[TranscriptLine, ...]
    item_scores: Mapping[str, int]
    rationales: Mapping[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()  # e.g. {"masked"} for synthetic sessions with neutral words
    total_label: int | None = None  # a PHQ-8 total without item scores (DAIC-WOZ test): evaluation only

    @property
    def has_items(self) -> bool:
        return all(k in self.item_scores for k in ITEM_KEYS)

    @property
    def total(self) -> int:
        if not self.has_items and self.total_label is not None:
            return int(self.total_label)
        return int(sum(self.item_scores[k] for k in ITEM_KEYS))


def item_prompts(
    transcript: Sequence[TranscriptLine],
    cfg: MllmdrConfig,
    *,
    has_audio: bool,
    has_video: bool,
    indicators: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """The 8 item prompts for a transcript: the core's ``prompt.item_prompts``, the assessor's builder
    (``indicators``: the session's, used when the bundle option ``assess.indicators_in_prompt`` is on)."""
    made = build_item_prompts(
        transcript,
        has_audio=has_audio,
        has_video=has_video,
        max_pairs=cfg.assess.max_qa_pairs_per_item,
        indicators=indicators if cfg.assess.indicators_in_prompt else None,
        indicator_names=cfg.assess.prompt_indicators,
        shared_prefix=cfg.assess.shared_prefix_prompts,
    )
    return {key: p.text for key, p in made.items()}


def default_rationale(item_key: str, score: int) -> str:
    return f"The interview gives evidence for a {item_key} score of {score}."


def rationale(session: SessionLabels, item_key: str, score: int) -> str:
    """The teacher's rationale for the item, or a plain default when it wrote none."""
    return session.rationales.get(item_key) or default_rationale(item_key, score)


@dataclass(frozen=True)
class ItemExample:
    session_id: str
    item_key: str
    prompt: str
    target: str
    score: int
    features_path: Path
    modality: str = "all"
    tags: frozenset[str] = frozenset()


class FeatureCache:
    """Loads each session's ``.npz`` once (the demo corpus fits in memory many times over)."""

    def __init__(self) -> None:
        self._cache: dict[Path, SessionFeatures] = {}

    def get(self, path: Path) -> SessionFeatures:
        if path not in self._cache:
            self._cache[path] = load_features(path)
        return self._cache[path]


def _nonempty(a: FloatArray) -> FloatArray | None:
    return a if a.ndim == 2 and a.shape[0] > 0 else None


def build_examples(
    sessions: Sequence[SessionLabels],
    features_dir: Path,
    cfg: MllmdrConfig,
    *,
    modality: str = "all",
    cache: FeatureCache | None = None,
) -> list[ItemExample]:
    """8 examples per session with item labels (total-only sessions give none). ``modality``: "all"
    (text + audio + video), "text" (no soft tokens) or
    "av" (soft tokens, no interview text). A modality with no frames gets no slot (as in the assessor);
    with ``cache`` the feature files are read to find out, without it every slot is kept."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    out: list[ItemExample] = []
    for s in sessions:
        if not s.has_items:
            continue  # totals only: nothing to train an item prompt on
        transcript: Sequence[TranscriptLine] = () if modality == "av" else s.transcript
        has_audio = has_video = modality != "text"
        if has_audio and cache is not None:
            feats = cache.get(features_dir / f"{s.session_id}.npz")
            has_audio, has_video = _nonempty(feats.audio) is not None, _nonempty(feats.visual) is not None
        indicators = None
        if cfg.assess.indicators_in_prompt and modality != "text":  # the live indicators, as the assessor
            path = features_dir / f"{s.session_id}.npz"
            indicators = (cache.get(path) if cache is not None else load_features(path)).indicators
        prompts = item_prompts(
            transcript, cfg, has_audio=has_audio, has_video=has_video, indicators=indicators
        )
        for key in ITEM_KEYS:
            score = int(s.item_scores[key])
            out.append(
                ItemExample(
                    session_id=s.session_id,
                    item_key=key,
                    prompt=prompts[key],
                    target=format_target(score, cite_indicators(rationale(s, key, score), key, prompts[key])),
                    score=score,
                    features_path=features_dir / f"{s.session_id}.npz",
                    modality=modality,
                    tags=s.tags,
                )
            )
    return out


class ItemDataset(torch.utils.data.Dataset[MultimodalExample]):
    """``ItemExample`` → ``MultimodalExample`` (prompt, target, features, item score)."""

    def __init__(
        self, examples: Sequence[ItemExample], cache: FeatureCache | None = None, *, with_targets: bool = True
    ) -> None:
        self.examples = list(examples)
        self.cache = cache or FeatureCache()
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> MultimodalExample:
        ex = self.examples[idx]
        audio = visual = None
        if ex.modality != "text":
            feats = self.cache.get(ex.features_path)
            audio, visual = _nonempty(feats.audio), _nonempty(feats.visual)  # None: no slot in the prompt
        return MultimodalExample(
            prompt=ex.prompt,
            target=ex.target if self.with_targets else None,
            audio=audio,
            visual=visual,
            target_score=float(ex.score),
        )
