"""Assessor: one ``SessionSnapshot`` (features + transcript + indicators + window) → a PHQ-8 ``Assessment``.

The only place that assembles an ``Assessment``: live checkpoints and finals, pending retries
(``retry.assess_with_retry``), replay and training evaluation all hand it a snapshot. Steps, timed into
``Assessment.timings_ms``::

    transcript lines in the window --prompt.item_prompts (pairing, relevance, token budget)--> 8 item
    prompts (slots only for modalities with frames)
    audio (Ta, Da), visual (Tv, Dv) --LQ-formers (once, shared by the 8 items)--> 32 + 32 soft tokens
    --splice--> 8 × (L_i, d_llm) --backend.generate (one batch)--> text + MAA score per item
    (a ``SoftTokenBackend``, e.g. vLLM with the project's plugin, takes the 8 prompt texts and the soft
    tokens instead and embeds them itself: no splice, no LLM weights in this process)
    --prompt.parse_output--> score; no usable score → MAA score (rounded, clamped), flagged ``fallback``
    → evidence per item (the item's Q/A spans, its indicators, time ranges), the item's exact prompt and
    pairs, the rationale's grounding against that prompt (``grounding.check``) → Assessment, with
    ``transcript_coverage`` (``prompt.transcript_coverage``) and ``grounding_share``

Thread-safe for concurrent calls (the backend serialises generation); call it off the event loop.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from mllmdr_core.assessment import (
    SYNTHETIC_LABEL,
    Assessment,
    Evidence,
    Grounding,
    ItemAssessment,
    ModelInfo,
    PromptPair,
)
from mllmdr_core.backends.base import (
    ItemOutput,
    ItemRequest,
    LLMBackend,
    SoftPromptRequest,
    SoftTokenBackend,
    SoftTokens,
)
from mllmdr_core.backends.transformers_backend import TransformersBackend
from mllmdr_core.bundle import LoadedBundle
from mllmdr_core.errors import FeatureSpecError
from mllmdr_core.features.encoder import StreamingHubertEncoder
from mllmdr_core.features.face import FaceTracker
from mllmdr_core.features.visual_schema import V2_SPEC, restrict
from mllmdr_core.frames import FloatArray, QAPair, TranscriptLine
from mllmdr_core.grounding import check as check_grounding
from mllmdr_core.grounding import grounding_share
from mllmdr_core.phq8 import ITEM_KEYS, ITEM_MAX, is_positive_screen
from mllmdr_core.prompt import ItemPrompt, item_prompts, parse_output, transcript_coverage
from mllmdr_core.session_state import SessionState
from mllmdr_core.snapshot import SessionSnapshot

LOW_ACCURACY_SOURCES = frozenset({"asr:pocketsphinx"})
LOW_ACCURACY_LABEL = "LOW-ACCURACY TRANSCRIPT: part of the transcript came from offline speech recognition."
FALLBACK_NOTE = "The generated text held no usable score; the score is the MAA regression estimate."

# Indicators shown as evidence per item (names from features/indicators.py).
ITEM_INDICATORS: Mapping[str, tuple[str, ...]] = {
    "interest": ("expressivity", "smile_ratio", "speech_ratio"),
    "mood": ("smile_ratio", "expressivity", "f0_sd_semitones", "gaze_down_ratio"),
    "sleep": ("blink_rate_per_min", "energy_sd_db"),
    "tired": ("speech_ratio", "pause_mean_s", "energy_sd_db", "blink_rate_per_min"),
    "appetite": (),
    "failure": ("gaze_down_ratio", "smile_ratio"),
    "concentration": ("pause_count", "pause_mean_s", "gaze_down_ratio"),
    "psychomotor": ("head_motion", "pause_mean_s", "speech_ratio", "f0_sd_semitones"),
}
MAX_EVIDENCE_CHARS = 300


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def modalities_used(text: bool, audio: bool, video: bool) -> list[Literal["text", "audio", "video"]]:
    """The ``ModelInfo.modalities`` list: which inputs reached the model."""
    named: tuple[tuple[Literal["text", "audio", "video"], bool], ...] = (
        ("text", text), ("audio", audio), ("video", video)
    )
    return [name for name, used in named if used]


def _in_window(line: TranscriptLine, window: tuple[float, float]) -> bool:
    return line.final and bool(line.text.strip()) and line.end_s >= window[0] and line.start_s <= window[1]


def _has_frames(array: FloatArray) -> bool:
    """The rule of ``Assessor._features``: an empty array means the modality is absent."""
    return array.size > 0 and array.shape[0] > 0


def _maa_to_item(value: float | None) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    return int(min(ITEM_MAX, max(0, math.floor(value + 0.5))))


def transcript_evidence(pairs: Sequence[QAPair]) -> list[Evidence]:
    """One evidence entry per Q/A pair: the quoted answer (clipped) with its time range."""
    out = []
    for pair in pairs:
        answer = " ".join(pair.answer_text.split())
        if len(answer) > MAX_EVIDENCE_CHARS:
            answer = answer[: MAX_EVIDENCE_CHARS - 1] + "…"
        question = f"Q: {pair.question.text.strip()} " if pair.question else ""
        out.append(
            Evidence(
                kind="transcript", text=f'{question}A: "{answer}"', start_s=pair.start_s, end_s=pair.end_s
            )
        )
    return out


def indicator_evidence(item_key: str, indicators: Mapping[str, float]) -> list[Evidence]:
    """The item's indicators (:data:`ITEM_INDICATORS`) with their values and window as evidence."""
    window_s = indicators.get("window_s")
    t_s = indicators.get("t_s")
    start = t_s - window_s if t_s is not None and window_s is not None else None
    span = f" ({window_s:.0f} s window)" if window_s is not None else ""
    out = []
    for name in ITEM_INDICATORS.get(item_key, ()):
        value = indicators.get(name)
        if value is None or not math.isfinite(value):
            continue
        out.append(
            Evidence(
                kind="indicator",
                name=name,
                value=float(value),
                text=f"{name} = {value:.3g}{span}",
                start_s=start,
                end_s=t_s,
            )
        )
    return out


class Assessor:
    """Runs the bundle's model on one window. ``backend`` defaults to the embedded transformers one."""

    def __init__(
        self,
        bundle: LoadedBundle,
        backend: LLMBackend | SoftTokenBackend | None = None,
        *,
        interview_script: Sequence[str] | None = None,
    ) -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.backend: LLMBackend | SoftTokenBackend = backend or TransformersBackend(
            bundle.model,
            bundle.config.llm.max_new_tokens,
            grounded_decoding=bundle.config.assess.grounded_decoding,
        )
        self.interview_script = interview_script
        self.max_pairs = bundle.config.assess.max_qa_pairs_per_item

    def new_session_state(
        self, session_id: str, transcriber: object | None = None, face_tracker: FaceTracker | None = None
    ) -> SessionState:
        """A ``SessionState`` whose audio encoder is the bundle's HuBERT (same features as in training);
        ``face_tracker``: one the caller owns (default: the state builds its own)."""
        encoder = StreamingHubertEncoder(self.bundle.config.audio, model=self.bundle.audio_encoder)
        return SessionState(
            self.bundle.config,
            session_id=session_id,
            audio_encoder=encoder,
            transcriber=transcriber,
            face_tracker=face_tracker,
        )

    def _features(self, array: FloatArray | None, dim: int, name: str) -> torch.Tensor | None:
        if array is None or array.size == 0 or array.shape[0] == 0:
            return None
        if array.ndim != 2 or array.shape[1] != dim:
            raise FeatureSpecError(f"{name} features must be (T, {dim}) for this bundle, got {array.shape}")
        features = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(0)  # (1, T, D)
        return features.to(next(self.model.audio_lqformer.parameters()).device)  # the model's (e.g. a GPU)

    def _bundle_columns(self, visual: FloatArray | None) -> FloatArray | None:
        """"visual-v2" frames with the values the bundle never saw in training masked (its recorded
        ``visual_columns``), so the model sees the mask pattern it was trained on."""
        spec = self.bundle.feature_spec
        if visual is None or spec.visual_spec != V2_SPEC or not spec.visual_columns or visual.size == 0:
            return visual
        return restrict(visual, spec.visual_columns)

    def fits(self, prompt: str, slots: int) -> bool:
        """Whether ``prompt`` with ``slots`` modality slots fits the bundle's ``max_prompt_tokens``."""
        soft = slots * (self.bundle.config.lqformer.num_queries - 1)  # each slot token becomes Q tokens
        limit = self.bundle.config.llm.max_prompt_tokens
        return len(self.model.tokenizer(prompt)["input_ids"]) + soft <= limit

    def prompts(self, snapshot: SessionSnapshot) -> dict[str, ItemPrompt]:
        """The 8 item prompts for ``snapshot`` (the transcript lines in its window; a slot per modality
        with frames), each within the bundle's prompt budget."""
        lines = [ln for ln in snapshot.transcript if _in_window(ln, snapshot.window)]
        has_audio, has_video = _has_frames(snapshot.audio), _has_frames(snapshot.visual)
        slots = int(has_audio) + int(has_video)
        return item_prompts(
            lines,
            has_audio=has_audio,
            has_video=has_video,
            max_pairs=self.max_pairs,
            script=self.interview_script,
            fits=lambda text: self.fits(text, slots),
            indicators=snapshot.indicators if self.bundle.config.assess.indicators_in_prompt else None,
            indicator_names=self.bundle.config.assess.prompt_indicators,
            shared_prefix=self.bundle.config.assess.shared_prefix_prompts,
        )

    def assess(
        self, snapshot: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment:
        """Score the 8 PHQ-8 items of ``snapshot`` (its window, in session seconds)."""
        timings: dict[str, float] = {}
        t_all = t0 = time.perf_counter()
        window = snapshot.window
        lines = [ln for ln in snapshot.transcript if _in_window(ln, window)]
        audio_t = self._features(snapshot.audio, self.model.audio_dim, "audio")
        visual_t = self._features(self._bundle_columns(snapshot.visual), self.model.visual_dim, "visual")
        prompts = self.prompts(snapshot)
        timings["prompts_ms"] = _ms(t0)
        t0 = time.perf_counter()
        texts = [prompts[k].text for k in ITEM_KEYS]
        embeds: list[torch.Tensor] | None = None
        with torch.inference_mode():
            if isinstance(self.backend, SoftTokenBackend):  # 32 + 32 soft tokens only
                if getattr(self.backend, "server_projection", False):  # the server applies LQFormer.proj
                    soft = SoftTokens.of(*self.model.encode_latents(audio_t, visual_t))
                else:
                    soft = SoftTokens.of(*self.model.encode_modalities(audio_t, None, visual_t, None))
            else:
                embeds = self.model.prompt_embeds(texts, audio_t, None, visual_t, None)  # 8 × (L_i, d_llm)
        timings["encode_ms"] = _ms(t0)
        t0 = time.perf_counter()
        if embeds is None:
            assert isinstance(self.backend, SoftTokenBackend)
            requests = [SoftPromptRequest(k, t) for k, t in zip(ITEM_KEYS, texts, strict=True)]
            outputs = self.backend.generate_soft(requests, soft)
        else:
            assert isinstance(self.backend, LLMBackend)
            outputs = self.backend.generate(
                [ItemRequest(k, e, t) for k, e, t in zip(ITEM_KEYS, embeds, texts, strict=True)]
            )
        timings["generate_ms"] = _ms(t0)
        t0 = time.perf_counter()
        if embeds is not None and any(o.maa_score is None for o in outputs):  # needs the LLM here
            outputs = self._with_local_maa(outputs, embeds)
        items = [
            self._item(key, out, prompts[key], snapshot.indicators)
            for key, out in zip(ITEM_KEYS, outputs, strict=True)
        ]
        total = sum(it.score for it in items)
        maa_values = [it.maa_score for it in items]
        maa_total = (
            float(sum(min(ITEM_MAX, max(0.0, v)) for v in maa_values if v is not None))
            if all(v is not None for v in maa_values)
            else None
        )
        patient = [ln for ln in lines if ln.speaker != "clinician"] or lines
        sources = Counter(ln.source for ln in patient)
        low_accuracy = any(ln.source in LOW_ACCURACY_SOURCES for ln in lines)
        labels = [SYNTHETIC_LABEL] if self.bundle.non_clinical else []
        if low_accuracy:
            labels.append(LOW_ACCURACY_LABEL)
        timings["parse_ms"] = _ms(t0)
        timings["total_ms"] = _ms(t_all)
        return Assessment(
            session_id=session_id,
            kind=kind,
            window_start_s=float(window[0]),
            window_end_s=float(window[1]),
            items=items,
            total=total,
            binary=is_positive_screen(total),
            maa_total=maa_total,
            transcript_coverage=transcript_coverage(lines, prompts),
            grounding_share=grounding_share(it.grounding.score for it in items if it.grounding is not None),
            model=ModelInfo(
                bundle_id=self.bundle.bundle_id,
                training_data=self.bundle.training_data,
                non_clinical=self.bundle.non_clinical,
                backend=self.backend.name,
                transcript_source=sources.most_common(1)[0][0] if sources else "none",
                low_accuracy_transcript=low_accuracy,
                modalities=modalities_used(bool(lines), audio_t is not None, visual_t is not None),
            ),
            labels=labels,
            timings_ms=timings,
        )

    def _with_local_maa(self, outputs: list[ItemOutput], embeds: list[torch.Tensor]) -> list[ItemOutput]:
        """Remote backends give no MAA score: compute it here for the items whose text is unparsed."""
        need = [i for i, o in enumerate(outputs) if o.maa_score is None and parse_output(o.text).fallback]
        if not need:
            return outputs
        from mllmdr_core.backends.transformers_backend import left_pad

        padded, mask = left_pad([embeds[i] for i in need])  # (n, L, d), (n, L)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model.llm(
                inputs_embeds=padded,
                attention_mask=mask,
                position_ids=position_ids,
                output_hidden_states=True,
                use_cache=False,
                logits_to_keep=1,
            )
            scores = self.model.maa(out.hidden_states[-1], mask.bool()).tolist()  # (n,)
        fixed = list(outputs)
        for i, score in zip(need, scores, strict=True):
            o = outputs[i]
            fixed[i] = ItemOutput(o.item_key, o.text, float(score), o.prompt_tokens, o.generated_tokens)
        return fixed

    def _item(
        self, key: str, out: ItemOutput, prompt: ItemPrompt, indicators: Mapping[str, float]
    ) -> ItemAssessment:
        parsed = parse_output(out.text)
        maa_item = _maa_to_item(out.maa_score)
        if parsed.score is not None:
            score, fallback = parsed.score, False
            rationale = parsed.reason or "(the model gave no reason)"
        else:
            score, fallback = (maa_item if maa_item is not None else 0), True
            rationale = FALLBACK_NOTE + (f" Generated text: {parsed.reason}" if parsed.reason else "")
        grounded = check_grounding(rationale, prompt.text, score)  # what the clinician reads
        return ItemAssessment(
            key=key,
            score=score,
            generated_score=parsed.score,
            maa_score=out.maa_score,
            rationale=rationale,
            fallback=fallback,
            raw_text=out.text,
            evidence=transcript_evidence(prompt.pairs) + indicator_evidence(key, indicators),
            prompt=prompt.text,
            pairs=[
                PromptPair(
                    question=p.question.text if p.question else None,
                    answer=p.answer_text,
                    start_s=p.start_s,
                    end_s=p.end_s,
                )
                for p in prompt.pairs
            ],
            grounding=Grounding(score=grounded.score, ungrounded=list(grounded.ungrounded)),
        )
