"""Rationale teachers: write the "Evaluation Result: N. Evaluation Reason: …" training targets.

As in the paper, a teacher sees the interview dialogue relevant to a PHQ-8 item and the item's known
label and explains the label. Two teachers:

* :class:`OpenAICompatibleTeacher` — any OpenAI-compatible ``/chat/completions`` endpoint (vLLM,
  llama.cpp server, a hosted API): URL + model name (+ optional API key).
* :class:`TemplateTeacher` — offline default for the synthetic corpus: writes the reason from the
  planted evidence (``synth_meta.json``) and verbatim transcript quotes. Its rationales are labelled
  ``teacher: "template (synthetic)"`` in the data.

The target always carries the dataset label; a teacher that states another score is recorded with
``agreed=False`` (its reason is kept, the score is not).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from mllmdr_core.errors import BackendError
from mllmdr_core.features.interview import pair_qa, pairs_for_item
from mllmdr_core.frames import QAPair
from mllmdr_core.phq8 import ITEM_KEYS, PHQ8_ITEMS
from mllmdr_core.prompt import format_target, parse_output
from training.data.records import SessionRecord

TEMPLATE_TEACHER_NAME = "template (synthetic)"
LEVEL_NAMES = ("not at all", "several days", "more than half the days", "nearly every day")  # PHQ wording
LEVELS = ("not at all", "on several days", "on more than half the days", "nearly every day")  # in prose
_ITEMS = {item.key: item for item in PHQ8_ITEMS}


@dataclass(frozen=True)
class RationaleRequest:
    """What a teacher sees for one item of one session."""

    session_id: str
    item_key: str
    score: int  # the label (0–3) the rationale must explain
    qa_pairs: tuple[QAPair, ...]  # the item's relevant pairs, time order
    context: Mapping[str, Any] = field(default_factory=dict)  # synthetic: the session's synth_meta.json


@dataclass(frozen=True)
class Rationale:
    session_id: str
    item_key: str
    score: int
    reason: str
    target: str  # "Evaluation Result: N. Evaluation Reason: …" (always the label's N)
    teacher: str
    agreed: bool = True  # the teacher's own stated score equals the label

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RationaleTeacher(Protocol):
    """Anything that explains a known item label from the dialogue."""

    name: str

    def explain(self, request: RationaleRequest) -> Rationale: ...


def requests_for_record(record: SessionRecord, max_pairs: int = 4) -> list[RationaleRequest]:
    """One request per labelled item of a session (none when the session has no item labels)."""
    items = record.labels.items
    if items is None:
        return []
    pairs = pair_qa(record.transcript)
    out = []
    for key in ITEM_KEYS:
        chosen = sorted(pairs_for_item(pairs, key, max_pairs), key=lambda p: p.start_s)
        out.append(RationaleRequest(record.session_id, key, items[key], tuple(chosen), record.meta))
    return out


def dialogue_text(pairs: Sequence[QAPair]) -> str:
    """The pairs as "Interviewer: …" / "Participant: …" lines for the teacher prompt."""
    lines = []
    for p in pairs:
        if p.question is not None:
            lines.append(f"Interviewer: {p.question.text}")
        lines.append(f"Participant: {p.answer_text or '(no answer)'}")
    return "\n".join(lines) or "(no relevant dialogue)"


# ---------------------------------------------------------------------------------------------- remote


def teacher_prompt(request: RationaleRequest) -> list[dict[str, str]]:
    """Chat messages in the paper's style: dialogue + known label → result and reason."""
    item = _ITEMS[request.item_key]
    system = (
        "You are an experienced psychiatrist. You explain PHQ-8 item ratings from clinical interviews, "
        "citing what the participant said. Be concise (2-3 sentences)."
    )
    user = (
        f'PHQ-8 item "{item.title}": {item.question}.\n'
        "Scale: 0 not at all, 1 several days, 2 more than half the days, 3 nearly every day.\n"
        f"Interview excerpt:\n{dialogue_text(request.qa_pairs)}\n"
        f"The participant's rating for this item is {request.score} ({LEVEL_NAMES[request.score]}).\n"
        "Explain why the dialogue supports this rating. Reply exactly in the form "
        f'"Evaluation Result: {request.score}. Evaluation Reason: <your reason>".'
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class OpenAICompatibleTeacher:
    """Rationales from an OpenAI-compatible chat-completions endpoint (``base_url`` ends in ``/v1``)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 1,
        temperature: float = 0.2,
        max_tokens: int = 256,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.retries = model, retries
        self.temperature, self.max_tokens = temperature, max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
        self.name = f"openai-compatible:{model}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        last: BackendError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(0.2 * attempt)
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                last = BackendError(f"teacher {self.url} timed out ({type(exc).__name__})")
                continue
            except httpx.HTTPError as exc:
                raise BackendError(f"cannot reach teacher {self.url}: {exc}") from exc
            if resp.status_code >= 500:
                last = BackendError(f"teacher {self.url} answered {resp.status_code}: {resp.text[:200]}")
                continue
            if resp.status_code >= 400:
                raise BackendError(
                    f"teacher {self.url} refused the request ({resp.status_code}): {resp.text[:200]}"
                )
            try:
                data = resp.json()
            except json.JSONDecodeError as exc:
                raise BackendError(f"teacher {self.url} returned non-JSON: {resp.text[:200]!r}") from exc
            if not isinstance(data, dict):
                raise BackendError(f"teacher {self.url} returned {type(data).__name__}, not an object")
            return data
        assert last is not None
        raise last

    def explain(self, request: RationaleRequest) -> Rationale:
        body = {
            "model": self.model,
            "messages": teacher_prompt(request),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        data = self._post(body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"teacher {self.url} reply has no choices[0].message.content: {data!r:.200}"
            ) from exc
        if not isinstance(content, str) or not content.strip():
            raise BackendError(f"teacher {self.url} returned an empty rationale")
        parsed = parse_output(content)
        reason = parsed.reason or content.strip()
        return Rationale(
            request.session_id,
            request.item_key,
            request.score,
            reason,
            format_target(request.score, reason),
            self.name,
            agreed=parsed.score == request.score,
        )


# -------------------------------------------------------------------------------------------- template

# which planted non-verbal cues speak to which item
_VOICE_ITEMS = {"psychomotor", "tired", "mood", "interest", "concentration"}
_FACE_ITEMS = {"mood", "interest", "failure", "concentration", "psychomotor", "sleep", "tired"}


def _bin(severity: float) -> int:
    """0 low, 1 middling, 2 high planted severity."""
    return 0 if severity < 0.35 else (1 if severity < 0.65 else 2)


def _voice_cue(voice: Mapping[str, Any], stats: Mapping[str, Any], level: int) -> str:
    wpm = float(stats.get("answer_words_per_min", voice.get("rate_wpm", 0.0)))
    lat = float(stats.get("mean_answer_latency_s", voice.get("latency_s", 0.0)))
    return (
        f"speech was fluent (about {wpm:.0f} words/min) with quick replies (≈{lat:.1f} s)",
        f"speech was somewhat slow (about {wpm:.0f} words/min) with pauses before answers (≈{lat:.1f} s)",
        f"speech was slow and quiet (about {wpm:.0f} words/min), long pauses before answers (≈{lat:.1f} s)",
    )[level]


def _face_cue(face: Mapping[str, Any], level: int) -> str:
    pitch, smiles, blinks = (
        float(face["head_pitch_deg"]),
        float(face["smiles_per_min"]),
        float(face["blinks_per_min"]),
    )
    return (
        f"the face was animated, with an upright head (≈{pitch:.0f}°) and regular smiles ({smiles:.1f}/min)",
        f"the head was slightly lowered (≈{pitch:.0f}°) and smiles were occasional ({smiles:.1f}/min)",
        f"the head was often lowered (≈{pitch:.0f}° down) with the gaze cast down, "
        f"few smiles ({smiles:.1f}/min) and slow blinking ({blinks:.0f}/min)",
    )[level]


def _agrees(level: int, score: int) -> bool:
    """A cue supports a label when their directions do not contradict (middling supports 1–2)."""
    return {0: score <= 1, 1: 1 <= score <= 2, 2: score >= 2}[level]


class TemplateTeacher:
    """Offline rationales from planted evidence and verbatim transcript quotes (synthetic data)."""

    name = TEMPLATE_TEACHER_NAME

    def explain(self, request: RationaleRequest) -> Rationale:
        key, score = request.item_key, request.score
        item = _ITEMS[key]
        ctx = request.context
        ev = (ctx.get("evidence") or {}).get(key)
        parts: list[str] = []
        if ev is not None:
            quote, words_signal, media_signal = (
                ev["answer"],
                ev["words_carry_signal"],
                ev["media_carry_signal"],
            )
            question = ev["question"]
        else:  # a real-data session: quote the most relevant answer, no planted cues
            best = request.qa_pairs[0] if request.qa_pairs else None
            quote = best.answer_text if best else ""
            question = best.question.text if best and best.question else ""
            words_signal, media_signal = True, False
        title = item.title.lower()
        if words_signal and quote:
            parts.append(
                f'Asked "{question}", the participant said "{quote}", which points to {title} problems '
                f"{LEVELS[score]}."
                if score
                else f'Asked "{question}", the participant said "{quote}", which shows no {title} problems.'
            )
        elif quote:
            parts.append(f'The answer "{quote}" is non-committal, so the rating rests on non-verbal cues.')
        if ev is not None and media_signal:
            # cite only cues whose planted level agrees with the label (severity is a session-level trait)
            cues = []
            voice_level, face_level = _bin(float(ctx["voice_severity"])), _bin(float(ctx["face_severity"]))
            if key in _VOICE_ITEMS and _agrees(voice_level, score):
                cues.append(_voice_cue(ctx["voice"], ctx.get("speech_stats", {}), voice_level))
            if key in _FACE_ITEMS and _agrees(face_level, score):
                cues.append(_face_cue(ctx["face"], face_level))
            if cues:
                parts.append("Non-verbally, " + "; ".join(cues) + ".")
        elif ev is not None and not media_signal:
            parts.append("Voice and facial behaviour were unremarkable, so the rating rests on the words.")
        if not parts:
            parts.append(
                f"The interview gives little direct evidence; the recorded rating is {LEVELS[score]}."
            )
        reason = " ".join(parts)
        return Rationale(request.session_id, key, score, reason, format_target(score, reason), self.name)


def write_rationales(
    records: Iterable[SessionRecord], teacher: RationaleTeacher, path: Path | str, max_pairs: int = 4
) -> int:
    """Write one JSON line per labelled item: session, split, item, score, target, reason, teacher."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in records:
            for request in requests_for_record(record, max_pairs):
                row = teacher.explain(request).to_json()
                row.update(dataset=record.dataset, split=record.split)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n
