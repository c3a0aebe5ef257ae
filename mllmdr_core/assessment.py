"""The result that leaves the system: PHQ-8 item scores with rationales and evidence.

Pydantic models so that the same object is the core's return value, the wire payload of the server's
``checkpoint.result`` / ``assessment.result`` events, the stored row, and has a JSON schema
(``Assessment.model_json_schema()``).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from mllmdr_core.phq8 import BINARY_CUTOFF, ITEM_KEYS

DISCLAIMER = "Screening aid, not a diagnosis. Scores must be reviewed by a qualified clinician."
SYNTHETIC_LABEL = "NON-CLINICAL: model trained on synthetic data only; not validated for clinical use."


class Evidence(BaseModel):
    """What a rationale rests on: a transcript span or an indicator value, with its time range."""

    kind: Literal["transcript", "indicator"]
    text: str  # quoted transcript span, or e.g. "speech_ratio = 0.41 (30 s window)"
    name: str | None = None  # indicator name
    value: float | None = None  # indicator value
    start_s: float | None = None
    end_s: float | None = None


class PromptPair(BaseModel):
    """A question/answer pair as shown in an item prompt (an answer may be some of its sentences)."""

    question: str | None = None
    answer: str
    start_s: float
    end_s: float


class Grounding(BaseModel):
    """``mllmdr_core.grounding.check`` of the rationale against the item's prompt."""

    score: float = Field(ge=0.0, le=1.0)  # share of the rationale's sentences that are grounded
    ungrounded: list[str] = Field(default_factory=list)  # sentences not found in what the model saw


class ItemAssessment(BaseModel):
    key: str
    score: int = Field(ge=0, le=3)  # the reported score
    generated_score: int | None = Field(default=None, ge=0, le=3)  # parsed from the LLM's text
    maa_score: float | None = None  # MAA regression output (0–3 scale), when the backend gives one
    rationale: str
    fallback: bool = False  # True when the text held no score and the MAA score was used
    raw_text: str = ""
    evidence: list[Evidence] = Field(default_factory=list)
    prompt: str = ""  # the exact prompt text the model got for this item
    pairs: list[PromptPair] = Field(default_factory=list)  # the pairs the prompt shows, most relevant first
    grounding: Grounding | None = None  # None only in results stored before the check existed


class AudioProcessing(BaseModel):
    """What capture did to one published audio track, as its publisher reported it (the browser's
    ``MediaStreamTrack.getSettings()``; the Python SDK sends its file or device audio untouched).
    None: not reported. Echo cancellation, noise suppression and automatic gain control change the
    speech the features and speech-to-text see (gain control flattens loudness variability)."""

    source: Literal["browser", "python_sdk"] | None = None
    echo_cancellation: bool | None = None
    noise_suppression: bool | None = None
    auto_gain_control: bool | None = None
    channel_count: int | None = Field(default=None, ge=1, le=32)
    sample_rate: int | None = Field(default=None, ge=1, le=768_000)
    sample_size: int | None = Field(default=None, ge=1, le=64)


class ModelInfo(BaseModel):
    bundle_id: str
    training_data: str  # e.g. "synthetic" or "E-DAIC train split"
    non_clinical: bool
    backend: str  # "transformers" | "vllm"
    transcript_source: str = "captions"
    low_accuracy_transcript: bool = False
    # the inputs that reached the model for this window: "text" (transcript lines in the prompts),
    # "audio", "video" (feature frames in the window); [] for assessments written before the field
    modalities: list[Literal["text", "audio", "video"]] = Field(default_factory=list)


class Assessment(BaseModel):
    """A checkpoint or final PHQ-8 assessment of one session window."""

    schema_version: Literal[1] = 1
    session_id: str
    kind: Literal["checkpoint", "final"]
    created_at: float = Field(default_factory=time.time)
    window_start_s: float
    window_end_s: float
    items: list[ItemAssessment]
    total: int = Field(ge=0, le=24)
    binary: bool  # total ≥ 10
    maa_total: float | None = None
    # share (0–1) of the patient's transcript words in the window that reached at least one item prompt;
    # None when the window holds no patient words
    transcript_coverage: float | None = Field(default=None, ge=0.0, le=1.0)
    grounding_share: float | None = Field(default=None, ge=0.0, le=1.0)  # mean item grounding score
    model: ModelInfo
    labels: list[str] = Field(default_factory=list)  # human-facing labels, e.g. SYNTHETIC_LABEL
    disclaimer: str = DISCLAIMER
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # per published audio track role ("patient", "interviewer"): the processing its audio went through,
    # as the publisher reported it with its offer; {} when not reported (or not a live session)
    # per track role ("patient", "interviewer"); str keys so a reader accepts roles added later
    audio_processing: dict[str, AudioProcessing] = Field(default_factory=dict)

    def prompts(self) -> dict[str, str]:
        """Item key → the exact prompt text the model got (``prompts.json`` of a replay)."""
        return {item.key: item.prompt for item in self.items}

    @model_validator(mode="after")
    def _consistent(self) -> Assessment:
        keys = [item.key for item in self.items]
        if keys != list(ITEM_KEYS):
            raise ValueError(f"items must be the 8 PHQ-8 items in order, got {keys}")
        if self.total != sum(item.score for item in self.items):
            raise ValueError("total must equal the sum of item scores")
        if self.binary != (self.total >= BINARY_CUTOFF):
            raise ValueError("binary must be total >= 10")
        if self.model.non_clinical and SYNTHETIC_LABEL not in self.labels:
            raise ValueError("a non-clinical bundle's result must carry the synthetic-data label")
        return self
