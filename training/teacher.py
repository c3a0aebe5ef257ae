"""Rationale teachers: write the "Evaluation Result: N. Evaluation Reason: …" training targets.

As in the paper, a teacher sees the interview dialogue relevant to a PHQ-8 item and the item's known
label and explains the label. Two teachers:

* :class:`OpenAICompatibleTeacher` — any OpenAI-compatible ``/chat/completions`` endpoint (vLLM,
  llama.cpp server, a hosted API): URL + model name (+ optional API key).
* :class:`TemplateTeacher` — offline default for the synthetic corpus: writes the reason from the
  planted evidence (``synth_meta.json``) and verbatim transcript quotes. Its rationales are labelled
  ``teacher: "template (synthetic)"`` in the data (``"template (transcript quotes)"`` on real data, where
  nothing is planted and the reason only quotes the item's most relevant answer).

A teacher sees exactly the Q/A pairs of the item's prompt (``mllmdr_core.prompt.item_prompts``, the
builder the model's prompts come from) and states only what that prompt holds: every quote is verbatim
prompt text, and non-verbal cues are described in words, never as numbers the model does not receive.

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
from mllmdr_core.features.interview import pairs_for_item
from mllmdr_core.frames import QAPair
from mllmdr_core.phq8 import ITEM_KEYS, PHQ8_ITEMS
from mllmdr_core.prompt import format_target, item_prompts, parse_output
from training.data.records import SessionRecord

TEMPLATE_TEACHER_NAME = "template (synthetic)"
TEMPLATE_REAL_DATA_NAME = "template (transcript quotes)"
LEVEL_NAMES = ("not at all", "several days", "more than half the days", "nearly every day")  # PHQ wording
LEVELS = ("not at all", "on several days", "on more than half the days", "nearly every day")  # in prose
_ITEMS = {item.key: item for item in PHQ8_ITEMS}


@dataclass(frozen=True)
class RationaleRequest:
    """What a teacher sees for one item of one session."""

    session_id: str
    item_key: str
    score: int  # the label (0–3) the rationale must explain
    qa_pairs: tuple[QAPair, ...]  # the item's prompt pairs, time order
    context: Mapping[str, Any] = field(default_factory=dict)  # synthetic: the session's synth_meta.json
    prompt: str = ""  # the item prompt the model will get: what a rationale may quote


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
    """One request per labelled item of a session (none when the session has no item labels), with the
    pairs and text of the item's prompt (text only: soft-token slots carry no words to quote)."""
    items = record.labels.items
    if items is None:
        return []
    prompts = item_prompts(record.transcript, has_audio=False, has_video=False, max_pairs=max_pairs)
    out = []
    for key in ITEM_KEYS:
        chosen = tuple(sorted(prompts[key].pairs, key=lambda p: p.start_s))
        prompt = prompts[key].text
        out.append(RationaleRequest(record.session_id, key, items[key], chosen, record.meta, prompt))
    return out


def _in_prompt(text: str, prompt: str) -> bool:
    """``text`` occurs in ``prompt`` (whitespace collapsed): it may be quoted."""
    return bool(text) and " ".join(text.split()) in " ".join(prompt.split())


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


def _voice_cue(level: int) -> str:
    """The planted voice level in words (the model gets soft tokens, not the planted numbers)."""
    return (
        "speech was fluent with quick replies",
        "speech was somewhat slow, with pauses before answers",
        "speech was slow and quiet, with long pauses before answers",
    )[level]


def _face_cue(level: int) -> str:
    """The planted face level in words."""
    return (
        "the face was animated, with an upright head and regular smiles",
        "the head was slightly lowered and smiles were occasional",
        "the head was often lowered with the gaze cast down, few smiles and slow blinking",
    )[level]


def _agrees(level: int, score: int) -> bool:
    """A cue supports a label when their directions do not contradict (middling supports 1–2)."""
    return {0: score <= 1, 1: 1 <= score <= 2, 2: score >= 2}[level]


def _best_pair(request: RationaleRequest) -> QAPair | None:
    """The item's most relevant prompt pair with an answer (the core's relevance ranking)."""
    answered = [p for p in request.qa_pairs if p.answer_text]
    ranked = pairs_for_item(answered, request.item_key, 1)
    return ranked[0] if ranked else None


class TemplateTeacher:
    """Offline rationales from planted evidence and verbatim transcript quotes (synthetic data)."""

    name = TEMPLATE_TEACHER_NAME

    def explain(self, request: RationaleRequest) -> Rationale:
        key, score = request.item_key, request.score
        item = _ITEMS[key]
        ctx = request.context
        ev = (ctx.get("evidence") or {}).get(key)
        parts: list[str] = []
        best = _best_pair(request)
        quote = best.answer_text if best else ""
        question = best.question.text if best and best.question else ""
        words_signal, media_signal = True, False
        if ev is not None:
            words_signal, media_signal = ev["words_carry_signal"], ev["media_carry_signal"]
            if _in_prompt(ev["answer"], request.prompt):  # the planted answer made it into the prompt
                quote = ev["answer"]
                question = ev["question"] if _in_prompt(ev["question"], request.prompt) else ""
        if not request.prompt:  # no prompt given (a caller's own request): quote nothing unverifiable
            quote = question = ""
        title = item.title.lower()
        if words_signal and quote:
            said = f'The participant said "{quote}"'
            if question:
                said = f'Asked "{question}", the participant said "{quote}"'
            parts.append(
                f"{said}, which points to {title} problems {LEVELS[score]}."
                if score
                else f"{said}, which shows no {title} problems."
            )
        elif quote:
            parts.append(f'The answer "{quote}" is non-committal, so the rating rests on non-verbal cues.')
        if ev is not None and media_signal:
            # cite only cues whose planted level agrees with the label (severity is a session-level trait)
            cues = []
            voice_level, face_level = _bin(float(ctx["voice_severity"])), _bin(float(ctx["face_severity"]))
            if key in _VOICE_ITEMS and _agrees(voice_level, score):
                cues.append(_voice_cue(voice_level))
            if key in _FACE_ITEMS and _agrees(face_level, score):
                cues.append(_face_cue(face_level))
            if cues:
                parts.append("Non-verbally, " + "; ".join(cues) + ".")
        elif ev is not None and not media_signal:
            parts.append("Voice and facial behaviour were unremarkable, so the rating rests on the words.")
        if not parts:
            parts.append(
                f"The interview gives little direct evidence; the recorded rating is {LEVELS[score]}."
            )
        reason = " ".join(parts)
        name = self.name if ev is not None else TEMPLATE_REAL_DATA_NAME
        return Rationale(request.session_id, key, score, reason, format_target(score, reason), name)


# ------------------------------------------------------------------------------------ indicator citation

INDICATOR_PREFIX = "Indicators: "  # the line mllmdr_core.prompt.indicator_line writes
MAX_CITED_INDICATORS = 2


def prompt_indicators(prompt: str) -> dict[str, str]:
    """The ``name value`` pairs of the prompt's indicator line, values verbatim (empty without one)."""
    for line in prompt.splitlines():
        if line.startswith(INDICATOR_PREFIX):
            pairs = (part.rsplit(" ", 1) for part in line[len(INDICATOR_PREFIX) :].split(", "))
            return {p[0]: p[1] for p in pairs if len(p) == 2}
    return {}


def cite_indicators(reason: str, item_key: str, prompt: str) -> str:
    """``reason`` plus one sentence citing the item's indicators (``assess.ITEM_INDICATORS``) exactly as
    the prompt's indicator line states them (bundle option ``indicators_in_prompt``); ``reason``
    unchanged when the prompt carries none of them, so no rationale states a number its prompt lacks."""
    from mllmdr_core.assess import ITEM_INDICATORS

    shown = prompt_indicators(prompt)
    cited = [f"{n} {shown[n]}" for n in ITEM_INDICATORS.get(item_key, ()) if n in shown]
    if not cited:
        return reason
    return f"{reason} Measured in this call: {', '.join(cited[:MAX_CITED_INDICATORS])}."


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
