"""Speech-to-text sources (mllmdr_core/features/transcribe.py): pocketsphinx on espeak-ng speech, a tiny
random-init Whisper end to end (plumbing only: its text is junk), captions that bypass ASR."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.features.audio import to_mono_16k
from mllmdr_core.features.transcribe import (
    CaptionSource,
    PocketsphinxTranscriber,
    Transcriber,
    WhisperTranscriber,
    make_transcriber,
    word_error_rate,
    word_errors,
)
from mllmdr_core.frames import FloatArray

# Measured on this machine (pocketsphinx 5.1.1, espeak-ng en-us voice, these six sentences, one
# transcriber in order): WER 0.450. The bound is that plus 0.20 for espeak-ng/pocketsphinx build
# differences; a regression in the decoding path (no CMN priming, wrong sample format) goes past it.
POCKETSPHINX_WER_BOUND = 0.65

SENTENCES = (
    "I have been sleeping badly and I feel tired most of the time.",
    "I used to enjoy playing music with my friends.",
    "My mood has been pretty low for a few weeks.",
    "I wake up at four in the morning and cannot get back to sleep.",
    "I find it hard to concentrate at work.",
    "Sometimes I feel like a failure.",
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs the Debian espeak-ng package"
)


def speak(text: str, path: Path, *args: str) -> FloatArray:
    """espeak-ng speech of ``text`` as 16 kHz mono float32."""
    cmd = ["espeak-ng", "-v", "en-us", *args, "-w", str(path), text]
    subprocess.run(cmd, check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return to_mono_16k(pcm, rate)


@needs_espeak
def test_pocketsphinx_transcribes_espeak_speech(tmp_path: Path) -> None:
    asr = PocketsphinxTranscriber()
    assert asr.low_accuracy and asr.name == "pocketsphinx"
    errors = words = 0
    t = 10.0
    for k, text in enumerate(SENTENCES):
        audio = speak(text, tmp_path / f"s{k}.wav")
        duration = len(audio) / 16000
        lines = asr.transcribe(audio, t)
        assert lines, f"nothing recognised in {text!r}"
        for line in lines:
            assert line.source == "asr:pocketsphinx" and line.speaker == "patient" and line.final
            assert t <= line.start_s < line.end_s <= t + duration + 0.02
            assert 0.0 <= line.confidence <= 1.0
        assert [ln.start_s for ln in lines] == sorted(ln.start_s for ln in lines)
        e, n = word_errors(text, " ".join(ln.text for ln in lines))
        errors, words = errors + e, words + n
        t += duration + 3.0
    wer = errors / words
    print(f"pocketsphinx WER on {len(SENTENCES)} espeak-ng sentences: {wer:.3f}")
    assert wer < POCKETSPHINX_WER_BOUND


@needs_espeak
def test_pocketsphinx_splits_lines_at_long_silence(tmp_path: Path) -> None:
    first = speak("I have been sleeping badly.", tmp_path / "a.wav")
    second = speak("I eat three meals a day.", tmp_path / "b.wav")
    gap = np.zeros(int(2.5 * 16000), dtype=np.float32)
    lines = PocketsphinxTranscriber(split_silence_s=1.0).transcribe(np.concatenate([first, gap, second]), 0.0)
    assert len(lines) == 2
    boundary = len(first) / 16000
    assert lines[0].end_s <= boundary + 0.3 and lines[1].start_s >= boundary + 2.0


def test_pocketsphinx_input_checks() -> None:
    asr = PocketsphinxTranscriber()
    assert asr.transcribe(np.zeros(800, dtype=np.float32), 0.0) == []  # 50 ms: nothing to decode
    with pytest.raises(MediaError, match="shaped"):
        asr.transcribe(np.zeros((16000, 2), dtype=np.float32), 0.0)
    with pytest.raises(MediaError, match="float"):
        asr.transcribe(np.zeros(16000, dtype=np.int16), 0.0)  # type: ignore[arg-type]


@needs_espeak
def test_captions_bypass_asr(tmp_path: Path) -> None:
    source = make_transcriber("captions")
    assert isinstance(source, CaptionSource) and not source.low_accuracy
    assert source.transcribe(speak("I feel tired.", tmp_path / "c.wav"), 0.0) == []
    line = CaptionSource.line("  I feel tired. ", "patient", 3.0, 4.5)
    assert (line.text, line.source, line.speaker, line.start_s, line.end_s, line.confidence) == (
        "I feel tired.", "captions", "patient", 3.0, 4.5, 1.0)


def test_make_transcriber_choices(tmp_path: Path) -> None:
    assert isinstance(make_transcriber("pocketsphinx"), PocketsphinxTranscriber)
    whisper = make_transcriber("whisper", str(tmp_path))
    assert isinstance(whisper, WhisperTranscriber) and not whisper.low_accuracy
    assert isinstance(make_transcriber("whisper", model_path=str(tmp_path)), WhisperTranscriber)
    for made in (make_transcriber("captions"), make_transcriber("pocketsphinx"), whisper):
        assert isinstance(made, Transcriber)
    with pytest.raises(ConfigError, match="needs a model"):
        make_transcriber("whisper")
    with pytest.raises(ConfigError, match="unknown transcription source"):
        make_transcriber("google")


# --- Whisper: a tiny random-init checkpoint saved locally and loaded through the real code path ---


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level alphabet (as in the Whisper tokenizer)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path = tmp_path_factory.mktemp("tiny-whisper")
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|notimestamps|>"]
    for token in specials:
        vocab[token] = len(vocab)
    ids = {token: vocab[token] for token in specials}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    extractor = WhisperFeatureExtractor(feature_size=80)
    processor = WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=64, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot,
        bos_token_id=eot, no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        suppress_tokens=[ids[t] for t in specials[1:]], begin_suppress_tokens=[eot],  # as real checkpoints
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_whisper_tiny_end_to_end(tiny_whisper: Path) -> None:
    asr = WhisperTranscriber(str(tiny_whisper), max_new_tokens=8)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(33.0 * 16000))).astype(np.float32)  # two 30 s windows
    lines = asr.transcribe(audio, 100.0)
    assert 1 <= len(lines) <= 2
    windows = [(100.0, 130.0), (130.0, 133.0)]
    for line in lines:
        assert line.source == "asr:whisper" and line.speaker == "patient" and line.final
        assert (line.start_s, line.end_s) in windows
        assert line.text and "<|" not in line.text  # junk words from random weights, but no prompt tokens
        assert 0.0 < line.confidence <= 1.0
    again = asr.transcribe(audio, 100.0)
    assert [(ln.text, ln.start_s) for ln in again] == [(ln.text, ln.start_s) for ln in lines]  # deterministic


def test_whisper_unloadable_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load Whisper model"):
        WhisperTranscriber(str(tmp_path)).load()  # an empty local folder


@pytest.mark.parametrize(
    ("reference", "hypothesis", "wer"),
    [("I eat three meals a day", "i eat three meals a day", 0.0),
     ("Normal, I think.", "know i think", 1 / 3),
     ("a b c d", "a x c", 0.5),
     ("a b", "a b c d", 1.0),
     ("", "", 0.0),
     ("", "uh", 1.0)],
)
def test_word_error_rate(reference: str, hypothesis: str, wer: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(wer)


@needs_espeak
def test_session_without_captions_yields_transcript_pairs_and_prompts(tmp_path: Path) -> None:
    """Patient-only audio → SessionState (VAD segments) → pocketsphinx lines → script pairs → item prompt."""
    from mllmdr_core.features.interview import DEFAULT_INTERVIEW_SCRIPT, pair_transcript
    from mllmdr_core.prompt import build_item_prompt
    from mllmdr_core.session_state import SessionState
    from mllmdr_core.testing import tiny_config

    answers = ("I am doing okay.", "I am from Ohio.", "I have been sleeping badly.")
    silence = np.zeros(int(3.0 * 16000), dtype=np.float32)
    pieces, spans, t = [silence], [], 3.0
    for k, text in enumerate(answers):
        audio = speak(text, tmp_path / f"a{k}.wav")
        pieces += [audio, silence]
        spans.append((t, t + len(audio) / 16000))
        t = spans[-1][1] + 3.0
    track = np.concatenate(pieces)
    state = SessionState(tiny_config(), session_id="asr", transcriber=PocketsphinxTranscriber())
    try:
        for i in range(0, len(track), 8000):  # 0.5 s chunks, as a live track delivers them
            state.push_audio(track[i : i + 8000], 16000, t_s=i / 16000)
        state.flush()
        lines = state.transcript
    finally:
        state.close()
    assert lines and all(ln.source == "asr:pocketsphinx" and ln.speaker == "patient" for ln in lines)
    for line in lines:  # every line lies inside one spoken answer (VAD hangover allowed)
        assert any(a - 0.3 <= line.start_s and line.end_s <= b + 0.5 for a, b in spans), line
    pairs = pair_transcript(lines, DEFAULT_INTERVIEW_SCRIPT)
    assert pairs and all(p.question is not None and p.question.source == "script" for p in pairs)
    prompt = build_item_prompt("sleep", pairs, has_audio=True, has_video=False)
    answer_lines = [ln for ln in prompt.splitlines() if ln.startswith("A: ")]
    assert answer_lines and all(ln[3:] in {p.answer_text for p in pairs} for ln in answer_lines)
