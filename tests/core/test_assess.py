from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmdr_core.assess import FALLBACK_NOTE, LOW_ACCURACY_LABEL, Assessor
from mllmdr_core.assessment import SYNTHETIC_LABEL, Assessment
from mllmdr_core.backends.base import (
    ItemOutput,
    ItemRequest,
    LLMBackend,
    SoftPromptRequest,
    SoftTokenBackend,
    SoftTokens,
)
from mllmdr_core.bundle import LoadedBundle, llm_params_loaded, load_bundle
from mllmdr_core.errors import FeatureSpecError
from mllmdr_core.features.interview import pair_transcript
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.model.tokenizer import VIDEO_TOKEN
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.prompt import REPLY_LINE, build_item_prompt
from mllmdr_core.snapshot import SessionSnapshot
from mllmdr_core.testing import build_tiny_bundle


def _line(t: float, speaker: str, text: str, source: str = "captions") -> TranscriptLine:
    return TranscriptLine(t, t + 2.0, speaker, text, source=source)  # type: ignore[arg-type]


TRANSCRIPT = [
    _line(1.0, "clinician", "How easy is it for you to get a good night's sleep?"),
    _line(3.5, "patient", "Not easy, I wake up at three every night."),
    _line(8.0, "clinician", "Have you noticed any changes in your appetite or eating?"),
    _line(10.5, "patient", "I barely eat anything these days."),
    _line(95.0, "clinician", "How has your mood been lately?"),  # outside the window below
    _line(97.5, "patient", "Pretty low."),
]
INDICATORS = {
    "speech_ratio": 0.41,
    "head_motion": 0.02,
    "pause_mean_s": 1.3,
    "smile_ratio": float("nan"),
    "t_s": 60.0,
    "window_s": 30.0,
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    return load_bundle(build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle"))


def _features(bundle: LoadedBundle) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((300, bundle.model.audio_dim)).astype(np.float32)
    visual = rng.standard_normal((300, bundle.model.visual_dim)).astype(np.float32)
    return audio, visual


def test_end_to_end_on_a_random_tiny_bundle(bundle: LoadedBundle) -> None:
    audio, visual = _features(bundle)
    t0 = time.perf_counter()
    result = Assessor(bundle).assess(
        SessionSnapshot.of(
            audio=audio,
            visual=visual,
            transcript=TRANSCRIPT,
            indicators=INDICATORS,
            window=(0.0, 60.0),
        ),
        session_id="s1",
        kind="checkpoint",
    )
    assert time.perf_counter() - t0 < 60
    assert [it.key for it in result.items] == list(ITEM_KEYS)
    assert result.total == sum(it.score for it in result.items) and result.binary == (result.total >= 10)
    for it in result.items:
        assert it.maa_score is not None and np.isfinite(it.maa_score)
        if it.generated_score is None:  # random weights → unparseable text → the MAA fallback, flagged
            assert it.fallback and it.rationale.startswith(FALLBACK_NOTE)
            assert it.score == min(3, max(0, int(np.floor(it.maa_score + 0.5))))
        else:
            assert not it.fallback and it.score == it.generated_score
    assert any(it.fallback for it in result.items)
    assert result.model.bundle_id == bundle.bundle_id and result.model.non_clinical
    assert result.model.backend == "transformers" and result.model.transcript_source == "captions"
    assert not result.model.low_accuracy_transcript
    assert result.labels == [SYNTHETIC_LABEL]
    assert set(result.timings_ms) == {"prompts_ms", "encode_ms", "generate_ms", "parse_ms", "total_ms"}
    assert result.maa_total is not None and 0.0 <= result.maa_total <= 24.0
    assert Assessment.model_validate_json(result.model_dump_json()) == result
    # evidence: the item's own Q/A spans and indicators, with time ranges
    by_key = {it.key: it for it in result.items}
    sleep_text = [e for e in by_key["sleep"].evidence if e.kind == "transcript"]
    assert len(sleep_text) == 1 and "wake up at three" in sleep_text[0].text
    assert sleep_text[0].start_s == 1.0 and sleep_text[0].end_s == 5.5
    assert "barely eat" in by_key["appetite"].evidence[0].text
    assert all("Pretty low" not in e.text for it in result.items for e in it.evidence)  # outside window
    psycho = {e.name: e for e in by_key["psychomotor"].evidence if e.kind == "indicator"}
    assert psycho["head_motion"].value == pytest.approx(0.02) and psycho["head_motion"].start_s == 30.0
    assert "smile_ratio" not in {e.name for e in by_key["mood"].evidence}  # NaN indicators are left out


class ScriptedBackend:
    """Stands in for a remote (vLLM) backend: fixed texts, no MAA score. Records the requests it got."""

    name = "scripted"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.requests: list[ItemRequest] = []

    def generate(self, requests: list[ItemRequest]) -> list[ItemOutput]:
        self.requests = requests
        return [
            ItemOutput(r.item_key, t, None, int(r.embeds.shape[0]), 5)
            for r, t in zip(requests, self.texts, strict=True)
        ]

    def close(self) -> None:
        pass


def test_parsed_scores_total_and_local_maa_for_unparsed(bundle: LoadedBundle) -> None:
    texts = ["Evaluation Result: 2. Evaluation Reason: little interest."] * 6 + [
        "no number here",
        "Result: 3",
    ]
    backend = ScriptedBackend(texts)
    audio, _ = _features(bundle)
    lines = [TranscriptLine(0.0, 2.0, "patient", "I sleep badly.", source="asr:pocketsphinx")]
    result = Assessor(bundle, backend).assess(
        SessionSnapshot.of(
            audio=audio,
            visual=None,
            transcript=lines,
            indicators={},
            window=(0.0, 10.0),
        ),
        session_id="s2",
        kind="final",
    )
    assert [it.score for it in result.items][:6] == [2] * 6 and result.items[7].score == 3
    assert (
        result.items[0].rationale == "little interest."
        and result.items[7].rationale == "(the model gave no reason)"
    )
    unparsed = result.items[6]
    assert unparsed.fallback and unparsed.maa_score is not None  # computed locally
    assert [it.maa_score for it in result.items if not it.fallback] == [None] * 7
    assert result.total == 15 + unparsed.score and result.binary
    assert result.model.backend == "scripted" and result.model.low_accuracy_transcript
    assert result.model.transcript_source == "asr:pocketsphinx"
    assert LOW_ACCURACY_LABEL in result.labels and SYNTHETIC_LABEL in result.labels
    # no video → no video slot: prompt tokens − 1 placeholder + 32 audio soft tokens
    pairs = pair_transcript(lines)
    for key, req in zip(ITEM_KEYS, backend.requests, strict=True):
        prompt = build_item_prompt(key, pairs, has_audio=True, has_video=False)
        assert VIDEO_TOKEN not in prompt
        assert req.embeds.shape == (len(bundle.tokenizer(prompt)["input_ids"]) - 1 + 32, bundle.model.d_llm)


def test_rejects_features_of_the_wrong_width(bundle: LoadedBundle) -> None:
    audio, visual = _features(bundle)
    with pytest.raises(FeatureSpecError, match="audio features"):
        Assessor(bundle, ScriptedBackend([""] * 8)).assess(
            SessionSnapshot.of(
                audio=audio[:, :-1],
                visual=visual,
                transcript=[],
                indicators={},
                window=(0.0, 1.0),
            ),
            session_id="s3",
            kind="checkpoint",
        )


def test_empty_window_still_gives_a_valid_assessment(bundle: LoadedBundle, tmp_path: Path) -> None:
    backend = ScriptedBackend(["Evaluation Result: 0. Evaluation Reason: nothing said yet."] * 8)
    result = Assessor(bundle, backend).assess(
        SessionSnapshot.of(
            audio=None,
            visual=None,
            transcript=[],
            indicators={},
            window=(0.0, 0.0),
        ),
        session_id="s4",
        kind="checkpoint",
    )
    assert result.total == 0 and not result.binary and result.model.transcript_source == "none"
    assert all(it.evidence == [] for it in result.items)


def test_new_session_state_feeds_the_assessor(bundle: LoadedBundle) -> None:
    backend = ScriptedBackend(["Evaluation Result: 1. Evaluation Reason: ok."] * 8)
    assessor = Assessor(bundle, backend)
    state = assessor.new_session_state("s5")
    try:
        assert state.audio_encoder.model is bundle.audio_encoder
        t = np.arange(4 * 16000) / 16000.0
        voice = (0.3 * np.sin(2 * np.pi * 180.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3.0 * t))).astype(
            np.float32
        )
        for k in range(0, len(voice), 320):  # 20 ms frames, as a WebRTC track delivers them
            state.push_audio(voice[k : k + 320], 16000)
        audio, visual = state.features(0.0, 4.0)
        assert audio.shape[1] == bundle.model.audio_dim and visual.shape[1] == bundle.model.visual_dim
        result = assessor.assess(
            SessionSnapshot.of(
                audio=audio,
                visual=visual,
                transcript=state.transcript,
                indicators=state.indicators(30.0),
                window=(0.0, 4.0),
            ),
            session_id="s5",
            kind="checkpoint",
        )
        assert result.total == 8
        has_audio = audio.shape[0] > 0
        prompt_len = len(
            bundle.tokenizer(build_item_prompt("mood", [], has_audio=has_audio, has_video=False))["input_ids"]
        )
        assert backend.requests[1].embeds.shape[0] == prompt_len + (31 if has_audio else 0)
    finally:
        state.close()
        state.close()


def test_prompts_are_trimmed_to_max_prompt_tokens(
    bundle: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = []
    for k in range(12):
        lines.append(_line(10.0 * k, "clinician", f"How have you been sleeping this week, part {k}?"))
        lines.append(
            _line(10.0 * k + 3, "patient", "I wake up at night and lie awake for hours thinking. " * 3)
        )
    backend = ScriptedBackend(["Evaluation Result: 1. Evaluation Reason: x."] * 8)
    audio, visual = _features(bundle)
    snapshot = SessionSnapshot.of(audio=audio, visual=visual, transcript=lines, window=(0.0, 200.0))
    full = Assessor(bundle, backend).assess(snapshot, session_id="s6", kind="checkpoint")
    full_len = backend.requests[2].embeds.shape[0]
    sleep_full = [e for e in full.items[2].evidence if e.kind == "transcript"]
    assert len(sleep_full) == bundle.config.assess.max_qa_pairs_per_item
    monkeypatch.setattr(bundle.config.llm, "max_prompt_tokens", full_len - 40)
    trimmed = Assessor(bundle, backend).assess(snapshot, session_id="s6", kind="checkpoint")
    assert all(r.embeds.shape[0] <= full_len - 40 for r in backend.requests)
    sleep = [e for e in trimmed.items[2].evidence if e.kind == "transcript"]
    whole = [e for e in sleep if e.text in {f.text for f in sleep_full}]
    assert 0 < len(whole) < len(sleep_full)  # the most relevant pairs are kept whole …
    assert whole == sleep[: len(whole)]
    for part in sleep[len(whole) :]:  # … and of the pairs that no longer fit, the sentences that do
        assert part.start_s in {f.start_s for f in sleep_full} and len(part.text) < len(sleep_full[0].text)


def test_coverage_prompts_and_grounding_are_recorded(
    bundle: LoadedBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle.config.assess, "max_qa_pairs_per_item", 1)
    lines = [
        *TRANSCRIPT[:2],
        TranscriptLine(5.7, 6.5, "clinician", "What is your favourite colour?"),
        TranscriptLine(6.6, 7.5, "patient", "Green."),  # relevant to no item, not the most recent: no prompt
        *TRANSCRIPT[2:],
    ]
    texts = ["Evaluation Result: 1. Evaluation Reason: Some signs."] * 8
    texts[2] = (
        'Evaluation Result: 2. Evaluation Reason: Says "I wake up at three every night". Sleeps 5 hours.'
    )
    audio, visual = _features(bundle)
    snapshot = SessionSnapshot.of(audio=audio, visual=visual, transcript=lines, window=(0.0, 60.0))
    assessor = Assessor(bundle, ScriptedBackend(texts))
    result = assessor.assess(snapshot, session_id="s7", kind="checkpoint")
    # patient words in the window: "Green." 1 + 9 (sleep answer) + 6 (appetite answer); 15 reached
    assert result.transcript_coverage == pytest.approx(15 / 16)
    expected = assessor.prompts(snapshot)
    assert result.prompts() == {k: expected[k].text for k in ITEM_KEYS}
    sleep = result.items[2]
    assert "A: Not easy, I wake up at three every night." in sleep.prompt
    assert [(p.question, p.answer, p.start_s, p.end_s) for p in sleep.pairs] == [
        ("How easy is it for you to get a good night's sleep?", "Not easy, I wake up at three every night.",
         1.0, 5.5)]
    assert all(it.grounding is not None for it in result.items)
    assert sleep.grounding is not None and sleep.grounding.score == 0.5
    assert sleep.grounding.ungrounded == ["Sleeps 5 hours."]
    assert [it.grounding.score for it in result.items if it.grounding] == [1.0, 1.0, 0.5, 1, 1, 1, 1, 1]
    assert result.grounding_share == pytest.approx(7.5 / 8)
    again = Assessment.model_validate_json(result.model_dump_json())  # round trip keeps the new fields
    assert again.transcript_coverage == result.transcript_coverage
    assert again.items[2].grounding == sleep.grounding
    old = result.model_dump(exclude={"transcript_coverage", "grounding_share"})
    for item in old["items"]:
        del item["prompt"], item["pairs"], item["grounding"]
    legacy = Assessment.model_validate(old)  # a result stored before these fields still reads
    assert legacy.transcript_coverage is None and legacy.items[0].grounding is None
    no_patient = SessionSnapshot.of(audio=audio, visual=visual, transcript=lines[:1], window=(0.0, 60.0))
    assert assessor.assess(no_patient, session_id="s7", kind="checkpoint").transcript_coverage is None


def test_indicators_in_prompt_is_a_bundle_option(bundle: LoadedBundle) -> None:
    import copy
    import dataclasses

    lines = [_line(0.0, "clinician", "How have you been sleeping?"), _line(1.0, "patient", "Badly.")]
    snapshot = SessionSnapshot.of(transcript=lines, indicators={"speech_ratio": 0.25, "pause_count": 3.0})
    assert not bundle.config.assess.indicators_in_prompt  # default: the paper's prompt
    assert all("Indicators:" not in p.text for p in Assessor(bundle).prompts(snapshot).values())
    config = copy.deepcopy(bundle.config)
    config.assess.indicators_in_prompt = True
    prompts = Assessor(dataclasses.replace(bundle, config=config)).prompts(snapshot)
    assert all("\nIndicators: speech_ratio 0.25, pause_count 3\n" in p.text for p in prompts.values())


def test_shared_prefix_prompts_is_a_bundle_option(bundle: LoadedBundle) -> None:
    import copy
    import dataclasses
    import os

    from training.dataset import item_prompts as training_prompts

    lines = [
        _line(0.0, "clinician", "How have you been sleeping?"),
        _line(1.0, "patient", "Badly, I wake up at three."),
        _line(3.0, "clinician", "And your appetite?"),
        _line(4.0, "patient", "I barely eat."),
    ]
    rng = np.random.default_rng(0)
    snapshot = SessionSnapshot.of(
        audio=rng.standard_normal((20, bundle.model.audio_dim)).astype(np.float32),
        visual=rng.standard_normal((20, bundle.model.visual_dim)).astype(np.float32),
        transcript=lines,
        indicators={"speech_ratio": 0.25},
    )
    assert not bundle.config.assess.shared_prefix_prompts  # default: the paper's order, item line first
    config = copy.deepcopy(bundle.config)
    config.assess.indicators_in_prompt = True
    paper = Assessor(dataclasses.replace(bundle, config=config)).prompts(snapshot)
    default = {k: p.text for k, p in paper.items()}
    assert all(t.startswith("Rate PHQ-8 item ") for t in default.values())
    config = copy.deepcopy(config)
    config.assess.shared_prefix_prompts = True
    assessor = Assessor(dataclasses.replace(bundle, config=config))
    shared = {k: p.text for k, p in assessor.prompts(snapshot).items()}
    prefix = os.path.commonprefix(list(shared.values()))  # noqa: RUF071  (characters, on purpose)
    assert prefix.startswith("Audio: <AudioHere>\nVideo: <VideoHere>\nScale: ")
    assert '.\nIndicators: speech_ratio 0.25\n' + REPLY_LINE + '\n' in prefix
    for key in ITEM_KEYS:  # the same lines in another order: the item's own line last
        assert sorted(shared[key].splitlines()) == sorted(default[key].splitlines())
        assert shared[key].splitlines()[-1] == default[key].splitlines()[0]
    # the shared text is shared tokens (what a prefix cache keys on)
    ids = [bundle.model.tokenizer(t)["input_ids"] for t in shared.values()]
    same = 0
    while all(len(i) > same for i in ids) and len({i[same] for i in ids}) == 1:
        same += 1
    assert same >= len(bundle.model.tokenizer(prefix)["input_ids"]) - 1
    # train/serve parity: the training set builds the same prompts from the same bundle option
    made = training_prompts(lines, config, has_audio=True, has_video=True, indicators={"speech_ratio": 0.25})
    assert made == shared


class ScriptedSoftBackend:
    """A ``SoftTokenBackend`` (as the vLLM plugin's): gets prompt texts + soft tokens, answers scores."""

    name = "scripted-soft"

    def __init__(self, maa: float | None) -> None:
        self.maa = maa
        self.requests: list[SoftPromptRequest] = []
        self.soft: SoftTokens | None = None

    def generate_soft(self, requests: list[SoftPromptRequest], soft: SoftTokens) -> list[ItemOutput]:
        self.requests, self.soft = requests, soft
        return [ItemOutput(r.item_key, "no number", self.maa, 40, 3) for r in requests]

    def close(self) -> None:
        pass


def test_soft_token_backend_on_a_bundle_without_llm_weights(bundle: LoadedBundle) -> None:
    light = load_bundle(bundle.path or "", llm_weights=False)
    assert llm_params_loaded(light.model) == 0 and llm_params_loaded(bundle.model) > 0
    audio, visual = _features(bundle)
    snapshot = SessionSnapshot.of(audio=audio, visual=visual, transcript=TRANSCRIPT, window=(0.0, 60.0))
    backend = ScriptedSoftBackend(maa=2.4)
    result = Assessor(light, backend).assess(snapshot, session_id="s", kind="checkpoint")
    assert isinstance(backend, SoftTokenBackend) and not isinstance(backend, LLMBackend)
    want = Assessor(bundle).prompts(snapshot)
    assert [r.prompt for r in backend.requests] == [want[k].text for k in ITEM_KEYS]
    assert backend.soft is not None and backend.soft.audio is not None and backend.soft.video is not None
    assert backend.soft.audio.shape == backend.soft.video.shape == (32, bundle.model.d_llm)
    with torch.no_grad():  # the bundle's LQ-former output, as the full model computes it
        ref, _ = bundle.model.encode_modalities(torch.from_numpy(audio).unsqueeze(0), None, None, None)
    assert ref is not None and torch.allclose(backend.soft.audio, ref[0])
    assert [it.score for it in result.items] == [2] * 8 and all(it.fallback for it in result.items)
    assert result.maa_total == pytest.approx(8 * 2.4) and result.model.backend == "scripted-soft"
    # no MAA from the backend and no LLM here: the item falls back to 0, flagged, never a local forward
    none = Assessor(light, ScriptedSoftBackend(maa=None)).assess(snapshot, session_id="s", kind="checkpoint")
    assert [it.score for it in none.items] == [0] * 8 and none.maa_total is None
