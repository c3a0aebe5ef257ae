"""Speech-to-text behind one interface: captions, Whisper (transformers) or pocketsphinx.

Sources, in order of preference (``PREFERENCE_ORDER``), chosen by config with :func:`make_transcriber`:

1. ``"captions"`` — the platform sends caption lines; no ASR runs (:class:`CaptionSource`).
2. ``"whisper"`` — transformers' Whisper from a local path or HF id given by the user; the production
   path (:class:`WhisperTranscriber`). Nothing is downloaded unless the user names an HF id.
3. ``"pocketsphinx"`` — the ``pocketsphinx`` wheel's bundled US-English model, offline; the embedded
   default for the demo and tests. Its output is poor (see ``docs/transcription.md``): every line it
   makes is labelled ``source="asr:pocketsphinx"`` and the transcriber has ``low_accuracy = True``.

All of this is pure synchronous code: ``transcribe`` blocks for about the duration of the audio, so the
server calls it from a worker thread, never on the event loop. A transcriber instance is meant for one
audio stream (one session's party): pocketsphinx adapts its cepstral mean across calls, per transcriber.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mllmdr_core.errors import ConfigError, MediaError
from mllmdr_core.frames import FloatArray, Speaker, TranscriptLine

SAMPLE_RATE = 16000
PREFERENCE_ORDER: tuple[str, ...] = ("captions", "whisper", "pocketsphinx")
SOURCES: tuple[str, ...] = ("captions", "pocketsphinx", "whisper")


@runtime_checkable
class Transcriber(Protocol):
    """Turns one closed speech segment (16 kHz mono float32 in [-1, 1]) into timed transcript lines."""

    name: str  # "captions" | "pocketsphinx" | "whisper"
    low_accuracy: bool  # results that used it must say so

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        """Lines with session times (``start_s`` is the time of ``samples[0]``); [] when nothing was heard."""
        ...


def _check_samples(samples: FloatArray) -> FloatArray:
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise MediaError(f"transcriber wants 16 kHz mono samples shaped (N,), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise MediaError(f"transcriber wants float samples in [-1, 1], got dtype {arr.dtype}")
    return np.clip(arr.astype(np.float32, copy=False), -1.0, 1.0)


class CaptionSource:
    """Captions from the platform: no ASR runs; ``transcribe`` returns nothing, ``line`` wraps a caption."""

    name = "captions"
    low_accuracy = False

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        return []

    @staticmethod
    def line(
        text: str, speaker: Speaker, start_s: float, end_s: float, *, final: bool = True
    ) -> TranscriptLine:
        """A caption sent by the platform, as a transcript line (``source="captions"``)."""
        return TranscriptLine(start_s, max(start_s, end_s), speaker, text.strip(), "captions", 1.0, final)


class PocketsphinxTranscriber:
    """Offline CMU pocketsphinx 5 (bundled en-us acoustic model, language model and dictionary).

    One transcriber is one audio stream (a session's party) with its own decoder, built on first use
    (~90 MB; 0.7 s idle, up to 6 s on a loaded machine). The decoder carries state from one utterance
    to the next — its live cepstral mean adapts to the speaker's level, and restoring only that mean
    (``set_cmn``) into a decoder shared by several streams was measured NOT to give the same words — so
    streams never share one: the same segments give the same lines live and in a replay (issue 17).
    :meth:`reset` starts the stream over (a new decoder on the next segment). Word timings come from the
    decoder's segmentation (100 frames/s) and the confidence of a line is the mean word posterior. A
    line is split where the decoder heard at least ``split_silence_s`` of silence. Before the stream's
    first utterance the audio is run once without search so that the mean starts from this speaker's
    level (measured: WER 0.85 → 0.60 on the first utterances of espeak-ng speech); afterwards it keeps
    adapting.
    """

    name = "pocketsphinx"
    low_accuracy = True
    source = "asr:pocketsphinx"
    _FRAME_S = 0.01

    def __init__(self, speaker: Speaker = "patient", *, split_silence_s: float = 1.0,
                 decoder_kwargs: dict[str, Any] | None = None) -> None:
        self.speaker: Speaker = speaker
        self.split_silence_s = split_silence_s
        self._decoder_kwargs = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", **(decoder_kwargs or {})}
        self._decoder: Any = None
        self._primed = False
        self._lock = threading.Lock()

    def _get_decoder(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            try:
                self._decoder = Decoder(**self._decoder_kwargs)
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"pocketsphinx decoder could not start: {exc}") from exc
        return self._decoder

    def reset(self) -> None:
        """Start the stream over: a fresh decoder (and priming) on the next segment."""
        with self._lock:
            self._decoder, self._primed = None, False

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        audio = _check_samples(samples)
        if len(audio) < SAMPLE_RATE // 10:  # under 100 ms: nothing to decode
            return []
        pcm = (audio * 32767.0).astype(np.int16).tobytes()
        with self._lock:
            decoder = self._get_decoder()
            if not self._primed:
                decoder.start_utt()
                decoder.process_raw(pcm, no_search=True)
                decoder.end_utt()
                self._primed = True
            decoder.start_utt()
            decoder.process_raw(pcm)
            decoder.end_utt()
            words = [(seg.word, seg.start_frame, seg.end_frame, seg.prob) for seg in decoder.seg()]
        return self._lines(words, start_s)

    def _lines(self, words: list[tuple[str, int, int, float]], start_s: float) -> list[TranscriptLine]:
        groups: list[list[tuple[str, float, float, float]]] = []
        last_end: float | None = None
        for word, f0, f1, prob in words:
            if word.startswith(("<", "[", "+")):  # <s>, </s>, <sil>, [NOISE], ++FILLER++
                continue
            t0, t1 = start_s + f0 * self._FRAME_S, start_s + (f1 + 1) * self._FRAME_S
            text = re.sub(r"\(\d+\)$", "", word)  # alternate pronunciations: "the(2)"
            if not groups or last_end is None or t0 - last_end >= self.split_silence_s:
                groups.append([])
            groups[-1].append((text, t0, t1, min(1.0, max(0.0, float(prob)))))
            last_end = t1
        return [
            TranscriptLine(
                start_s=g[0][1],
                end_s=g[-1][2],
                speaker=self.speaker,
                text=" ".join(w[0] for w in g),
                source=self.source,
                confidence=float(np.mean([w[3] for w in g])),
            )
            for g in groups
        ]


class WhisperTranscriber:
    """transformers' Whisper (``WhisperForConditionalGeneration`` + ``WhisperProcessor``).

    ``model`` is a local directory or an HF id chosen by the user (nothing is fetched otherwise). The
    model loads on first use. Audio longer than 30 s is cut into 30 s windows; each window with text
    gives one line spanning that window's audio, with confidence = exp(mean log-probability) of the
    generated tokens. Multilingual checkpoints are asked for English transcription (``language``).
    """

    name = "whisper"
    low_accuracy = False
    source = "asr:whisper"
    WINDOW_S = 30.0

    def __init__(self, model: str, speaker: Speaker = "patient", *, language: str | None = "en",
                 max_new_tokens: int = 128, device: str = "cpu") -> None:
        if not model:
            raise ConfigError("WhisperTranscriber needs a model path or HF id (transcription.model)")
        self.model_name = model
        self.speaker: Speaker = speaker
        self.language = language
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the checkpoint now (otherwise the first ``transcribe`` does)."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            processor: Any = WhisperProcessor.from_pretrained(self.model_name)
            model: Any = WhisperForConditionalGeneration.from_pretrained(self.model_name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load Whisper model {self.model_name!r}: {exc}") from exc
        self._processor = processor
        self._model = model.to(self.device).eval()

    def _generate_kwargs(self) -> dict[str, Any]:
        gen = self._model.generation_config
        room = int(self._model.config.max_target_positions) - 8  # leave room for the 3–4 prompt tokens
        kwargs: dict[str, Any] = {"max_new_tokens": max(1, min(self.max_new_tokens, room))}
        if self.language and getattr(gen, "is_multilingual", False) and getattr(gen, "lang_to_id", None):
            kwargs.update(language=self.language, task="transcribe")
        return kwargs

    def _window(self, audio: FloatArray) -> tuple[str, float]:
        import torch

        feats = self._processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        input_features = feats.input_features.to(self.device)  # (1, n_mels, 3000)
        with torch.inference_mode():
            out = self._model.generate(input_features, return_dict_in_generate=True, output_scores=True,
                                       **self._generate_kwargs())
            n_new = len(out.scores)
            new_ids = out.sequences[0, -n_new:] if n_new else out.sequences[0, :0]  # (n_new,)
            logp = self._model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
        tokenizer = self._processor.tokenizer
        special = set(tokenizer.all_special_ids) | self._prompt_ids()
        keep = [i for i, tok in enumerate(new_ids.tolist()) if tok not in special]
        text = tokenizer.decode([int(new_ids[i]) for i in keep], skip_special_tokens=True).strip()
        confidence = float(torch.exp(logp[keep].float().mean())) if keep else 0.0
        return text, confidence

    def _prompt_ids(self) -> set[int]:
        gen = self._model.generation_config
        ids: set[int] = set()
        for name in ("decoder_start_token_id", "no_timestamps_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(gen, name, None)
            if isinstance(value, int):
                ids.add(value)
        for table in ("lang_to_id", "task_to_id"):
            ids.update(int(v) for v in (getattr(gen, table, None) or {}).values())
        return ids

    def transcribe(self, samples: FloatArray, start_s: float) -> list[TranscriptLine]:
        audio = _check_samples(samples)
        if len(audio) < SAMPLE_RATE // 10:
            return []
        step = int(self.WINDOW_S * SAMPLE_RATE)
        lines: list[TranscriptLine] = []
        with self._lock:
            self._load()
            for offset in range(0, len(audio), step):
                window = audio[offset : offset + step]
                if len(window) < SAMPLE_RATE // 10:
                    continue
                text, confidence = self._window(window)
                if not text:
                    continue
                t0 = start_s + offset / SAMPLE_RATE
                lines.append(TranscriptLine(t0, t0 + len(window) / SAMPLE_RATE, self.speaker, text,
                                            self.source, min(1.0, max(0.0, confidence))))
        return lines


def make_transcriber(
    source: str, model: str | None = None, *, model_path: str | None = None, speaker: Speaker = "patient"
) -> Transcriber:
    """The transcriber for a config value: ``"captions"`` | ``"pocketsphinx"`` | ``"whisper"``.

    Whisper needs ``model`` (a local path or HF id; ``model_path`` is accepted as another name for it).
    """
    model = model or model_path
    if source == "captions":
        return CaptionSource()
    if source == "pocketsphinx":
        return PocketsphinxTranscriber(speaker)
    if source == "whisper":
        if not model:
            raise ConfigError("transcription source 'whisper' needs a model: a local path or HF id")
        return WhisperTranscriber(model, speaker)
    raise ConfigError(f"unknown transcription source {source!r}; expected one of {', '.join(SOURCES)}")


_WORD_RE = re.compile(r"[a-z0-9']+")


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, for WER."""
    return _WORD_RE.findall(text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) by word-level edit distance."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return row[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: errors / reference words (an empty reference gives 0, or 1 if anything was said)."""
    errors, n = word_errors(reference, hypothesis)
    return errors / n if n else float(errors > 0)
