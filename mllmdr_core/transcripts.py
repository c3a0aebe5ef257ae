"""Transcript files → ``TranscriptLine`` lists, and back.

Formats (picked by :func:`detect_format` from the name and the first bytes, or named explicitly):

- ``json``   — ours: a list of lines, or ``{"lines": [...]}`` / ``{"transcript": [...]}``; each line
  ``{"start_s", "end_s", "speaker", "text"}`` plus optional ``source``, ``confidence``, ``final``.
- ``daic``   — DAIC-WOZ ``XXX_TRANSCRIPT.csv``: tab-separated ``start_time stop_time speaker value``,
  speakers ``Ellie`` (interviewer) / ``Participant``.
- ``edaic``  — E-DAIC ``XXX_Transcript.csv``: comma-separated ``Start_Time, End_Time, Text, Confidence``
  (participant speech only, automatic transcription).
- ``vtt``    — WebVTT captions; the speaker from a ``<v Name>`` voice tag or a ``Name:`` prefix.
- ``srt``    — SubRip captions; the speaker from a ``Name:`` prefix.

The two dataset formats are read strictly (the dataset readers of ``training.data`` and replay use
these parsers): header names compared without case, spaces or underscores; every row has the header's
number of fields; DAIC-WOZ cells are taken verbatim (no CSV quoting), E-DAIC's may be quoted; times and
confidences are numbers (not NaN), ``0 <= start <= end``; a DAIC-WOZ speaker other than Ellie or
Participant is an error; rows with empty text are left out. Malformed input raises
:class:`~mllmdr_core.errors.DatasetError` naming ``file:line``.

Non-verbal annotations in the dataset formats (:func:`normalize_nonverbal`): a tag in angle or square
brackets (``<sigh>``, ``<laughter>``, ``[laughter]``) becomes one bracketed lower-case cue token
(``[sigh]``, ``[laughter]``); a run of x's standing alone (``xxx``, ``xxxx``: unintelligible speech)
becomes ``[unintelligible]``. The cues stay in the line — they reach the item prompts as the patient's
non-verbal behaviour, in one form the model learns — and a row left with nothing but cues is kept.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import Speaker, TranscriptLine

TranscriptFormat = Literal["json", "daic", "edaic", "vtt", "srt"]
FORMATS: tuple[TranscriptFormat, ...] = ("json", "daic", "edaic", "vtt", "srt")

_CLINICIAN_NAMES = {"ellie", "interviewer", "clinician", "doctor", "therapist", "provider", "dr", "host"}
_PATIENT_NAMES = {"participant", "patient", "client", "subject", "caller"}
_SPEAKERS: tuple[Speaker, ...] = ("patient", "clinician", "unknown")
_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})$")
_CUE_TIMING = re.compile(r"^(\S+)\s+-->\s+(\S+)")
_VOICE_TAG = re.compile(r"^<v(?:\.[\w.-]+)?\s+([^>]+)>")
_PREFIX = re.compile(r"^([A-Za-z][\w .'-]{0,30}):\s+(.*)$")
_TAGS = re.compile(r"</?[^>]+>")


def speaker_from_name(name: str) -> Speaker:
    """Map a speaker label (``Ellie``, ``Participant``, ``Dr``, ``patient``…) to our three roles."""
    key = name.strip().lower().rstrip(".")
    if key in _SPEAKERS:
        return cast(Speaker, key)
    first = key.split()[0].rstrip(".") if key.split() else ""
    if key in _CLINICIAN_NAMES or first in _CLINICIAN_NAMES:
        return "clinician"
    if key in _PATIENT_NAMES or first in _PATIENT_NAMES:
        return "patient"
    return "unknown"


def detect_format(path: Path, head: str) -> TranscriptFormat:
    """Guess the format from the suffix and the first line(s) of the file."""
    suffix = path.suffix.lower()
    first = head.lstrip("\ufeff").lstrip().splitlines()[0] if head.strip() else ""
    if suffix == ".json" or first.startswith(("[", "{")):
        return "json"
    if suffix == ".vtt" or first.startswith("WEBVTT"):
        return "vtt"
    if suffix == ".srt":
        return "srt"
    lowered = first.lower().replace(" ", "")
    if "\t" in first and lowered.startswith("start_time\tstop_time"):
        return "daic"
    if lowered.startswith("start_time,end_time"):
        return "edaic"
    if "-->" in head:
        return "srt"
    raise DatasetError(f"{path}:1: cannot tell the transcript format; name it (one of {', '.join(FORMATS)})")


def read_transcript(path: str | Path, fmt: TranscriptFormat | None = None) -> list[TranscriptLine]:
    """Read a transcript file into lines sorted by start time."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{p}: transcript file not found") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{p}: transcript is not UTF-8 text ({exc.reason})") from exc
    return parse_transcript(text, fmt or detect_format(p, text[:4096]), name=str(p))


def parse_transcript(text: str, fmt: TranscriptFormat, *, name: str = "<transcript>") -> list[TranscriptLine]:
    """Parse transcript ``text`` in format ``fmt``; ``name`` appears in error messages."""
    parsers: dict[str, Callable[[str, str], list[TranscriptLine]]] = {
        "json": _parse_json,
        "daic": _parse_daic,
        "edaic": _parse_edaic,
        "vtt": _parse_vtt,
        "srt": _parse_srt,
    }
    if fmt not in parsers:
        raise DatasetError(f"{name}: unknown transcript format {fmt!r} (one of {', '.join(FORMATS)})")
    lines = parsers[fmt](text, name)
    return sorted(lines, key=lambda line: (line.start_s, line.end_s))


def _line(
    name: str,
    lineno: int,
    start: float,
    end: float,
    speaker: Speaker,
    text: str,
    source: str,
    confidence: float = 1.0,
    final: bool = True,
) -> TranscriptLine:
    if not (start >= 0.0 and end >= start):
        raise DatasetError(f"{name}:{lineno}: bad time range start={start} end={end}")
    return TranscriptLine(
        start_s=start,
        end_s=end,
        speaker=speaker,
        text=text.strip(),
        source=source,
        confidence=confidence,
        final=final,
    )


def _float(value: Any, name: str, lineno: int, what: str) -> float:
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{name}:{lineno}: {what} is not a number: {value!r}") from exc
    if out != out:  # NaN
        raise DatasetError(f"{name}:{lineno}: {what} is NaN")
    return out


# --- our JSON -----------------------------------------------------------------------------------------


def _parse_json(text: str, name: str) -> list[TranscriptLine]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if isinstance(data, dict):
        data = data.get("lines", data.get("transcript"))
    if not isinstance(data, list):
        raise DatasetError(f'{name}:1: expected a list of lines or {{"lines": [...]}}')
    out: list[TranscriptLine] = []
    for i, row in enumerate(data):
        where = f"line object #{i}"
        if not isinstance(row, dict):
            raise DatasetError(f"{name}:{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in ("start_s", "end_s", "text") if k not in row]
        if missing:
            raise DatasetError(f"{name}:{where}: missing {', '.join(missing)}")
        speaker = str(row.get("speaker", "unknown"))
        out.append(
            _line(
                name,
                i,
                _float(row["start_s"], name, i, "start_s"),
                _float(row["end_s"], name, i, "end_s"),
                speaker_from_name(speaker),
                str(row["text"]),
                str(row.get("source", "captions")),
                _float(row.get("confidence", 1.0), name, i, "confidence"),
                bool(row.get("final", True)),
            )
        )
    return out


def dump_json(lines: Iterable[TranscriptLine]) -> str:
    """Write lines in our JSON format (round-trips through :func:`parse_transcript`)."""
    rows = [
        {
            "start_s": ln.start_s,
            "end_s": ln.end_s,
            "speaker": ln.speaker,
            "text": ln.text,
            "source": ln.source,
            "confidence": ln.confidence,
            "final": ln.final,
        }
        for ln in lines
    ]
    return json.dumps({"lines": rows}, indent=1)


# --- DAIC-WOZ / E-DAIC --------------------------------------------------------------------------------

_DAIC_SPEAKERS: dict[str, Speaker] = {"ellie": "clinician", "participant": "patient"}


def _header_key(cell: str) -> str:
    """``" Start_Time"`` → ``"starttime"``."""
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _table(
    text: str, name: str, delimiter: str, columns: Sequence[str], *, quotes: bool, title: str
) -> list[tuple[int, dict[str, str]]]:
    """(line, {column: stripped cell}) for every non-blank row under a header holding ``columns``."""
    reader = csv.reader(
        io.StringIO(text),
        delimiter=delimiter,
        skipinitialspace=True,
        quoting=csv.QUOTE_MINIMAL if quotes else csv.QUOTE_NONE,
    )
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError(f"{name}:1: empty {title} transcript (no header)")
    header_line, header = rows[0]
    keys = [_header_key(cell) for cell in header]
    missing = [col for col in columns if _header_key(col) not in keys]
    if missing:
        raise DatasetError(
            f"{name}:{header_line}: header lacks column(s) {', '.join(missing)}; "
            f"found {[cell.strip() for cell in header]}"
        )
    out = []
    for lineno, row in rows[1:]:
        if len(row) != len(keys):
            raise DatasetError(f"{name}:{lineno}: expected {len(keys)} fields, found {len(row)}")
        cells = dict(zip(keys, (cell.strip() for cell in row), strict=True))
        out.append((lineno, {col: cells[_header_key(col)] for col in columns}))
    return out


def _span(cells: dict[str, str], start_col: str, end_col: str, name: str, lineno: int) -> tuple[float, float]:
    start = _float(cells[start_col], name, lineno, start_col)
    end = _float(cells[end_col], name, lineno, end_col)
    if start < 0.0:
        raise DatasetError(f"{name}:{lineno}: {start_col} {start} is negative")
    if end < start:
        raise DatasetError(f"{name}:{lineno}: {end_col} {end} before {start_col} {start}")
    return start, end


_NONVERBAL_TAG = re.compile(r"[<\[]\s*([A-Za-z][A-Za-z _-]*?)\s*[>\]]")
_UNINTELLIGIBLE = re.compile(r"(?<![A-Za-z])[xX]{3,}(?![A-Za-z])")


def normalize_nonverbal(text: str) -> str:
    """``<sigh>`` / ``[Laughter]`` → ``[sigh]`` / ``[laughter]``; ``xxx`` → ``[unintelligible]``."""
    text = _NONVERBAL_TAG.sub(lambda m: "[" + re.sub(r"[\s_-]+", " ", m.group(1)).lower() + "]", text)
    return _UNINTELLIGIBLE.sub("[unintelligible]", text)


def _parse_daic(text: str, name: str) -> list[TranscriptLine]:
    columns = ("start_time", "stop_time", "speaker", "value")
    out = []
    for lineno, cells in _table(text, name, "\t", columns, quotes=False, title="DAIC-WOZ"):
        speaker = _DAIC_SPEAKERS.get(cells["speaker"].lower())
        if speaker is None:
            raise DatasetError(
                f"{name}:{lineno}: unknown speaker {cells['speaker']!r} (expected Ellie or Participant)"
            )
        start, stop = _span(cells, "start_time", "stop_time", name, lineno)
        if cells["value"]:
            value = normalize_nonverbal(cells["value"])
            out.append(_line(name, lineno, start, stop, speaker, value, "dataset"))
    return out


def _parse_edaic(text: str, name: str) -> list[TranscriptLine]:
    columns = ("Start_Time", "End_Time", "Text", "Confidence")
    out = []
    for lineno, cells in _table(text, name, ",", columns, quotes=True, title="E-DAIC"):
        start, end = _span(cells, "Start_Time", "End_Time", name, lineno)
        conf = _float(cells["Confidence"], name, lineno, "Confidence")
        if cells["Text"]:
            value = normalize_nonverbal(cells["Text"])
            out.append(_line(name, lineno, start, end, "patient", value, "dataset", conf))
    return out


# --- WebVTT / SRT -------------------------------------------------------------------------------------


def _timestamp(value: str, name: str, lineno: int) -> float:
    m = _TIMESTAMP.match(value.strip())
    if not m:
        raise DatasetError(f"{name}:{lineno}: bad timestamp {value!r} (want HH:MM:SS.mmm)")
    hours, minutes, seconds, frac = m.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(frac.ljust(3, "0")) / 1000


def _cue_speaker(text: str) -> tuple[Speaker, str]:
    voice = _VOICE_TAG.match(text)
    if voice:
        return speaker_from_name(voice.group(1)), _TAGS.sub("", text[voice.end() :])
    plain = _TAGS.sub("", text)
    prefix = _PREFIX.match(plain)
    if prefix and speaker_from_name(prefix.group(1)) != "unknown":
        return speaker_from_name(prefix.group(1)), prefix.group(2)
    return "unknown", plain


def _cues(text: str, name: str, *, vtt: bool) -> list[TranscriptLine]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start_at = 0
    if vtt:
        if not lines or not lines[0].lstrip("\ufeff").startswith("WEBVTT"):
            raise DatasetError(f"{name}:1: a WebVTT file must start with 'WEBVTT'")
        start_at = 1
    out: list[TranscriptLine] = []
    i = start_at
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if vtt and line.startswith(("NOTE", "STYLE", "REGION")):
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        timing_at = i if "-->" in line else i + 1  # an optional cue identifier precedes the timing
        if timing_at >= len(lines) or "-->" not in lines[timing_at]:
            raise DatasetError(f"{name}:{i + 1}: expected a cue timing line 'start --> end'")
        m = _CUE_TIMING.match(lines[timing_at].strip())
        if not m:
            raise DatasetError(f"{name}:{timing_at + 1}: bad cue timing {lines[timing_at].strip()!r}")
        start = _timestamp(m.group(1), name, timing_at + 1)
        end = _timestamp(m.group(2), name, timing_at + 1)
        j = timing_at + 1
        body: list[str] = []
        while j < len(lines) and lines[j].strip():
            body.append(lines[j].strip())
            j += 1
        speaker, cue_text = _cue_speaker(" ".join(body))
        if cue_text.strip():
            out.append(_line(name, timing_at + 1, start, end, speaker, cue_text, "captions"))
        i = j
    return out


def _parse_vtt(text: str, name: str) -> list[TranscriptLine]:
    return _cues(text, name, vtt=True)


def _parse_srt(text: str, name: str) -> list[TranscriptLine]:
    return _cues(text, name, vtt=False)


def _fmt_ts(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def dump_vtt(lines: Iterable[TranscriptLine]) -> str:
    """WebVTT with ``<v Role>`` voice tags."""
    cues = [
        f"{_fmt_ts(ln.start_s, '.')} --> {_fmt_ts(ln.end_s, '.')}\n<v {ln.speaker}>{ln.text}" for ln in lines
    ]
    return "WEBVTT\n\n" + "\n\n".join(cues) + "\n"


def dump_srt(lines: Iterable[TranscriptLine]) -> str:
    """SubRip with ``role:`` prefixes."""
    cues = [
        f"{k}\n{_fmt_ts(ln.start_s, ',')} --> {_fmt_ts(ln.end_s, ',')}\n{ln.speaker}: {ln.text}"
        for k, ln in enumerate(lines, start=1)
    ]
    return "\n\n".join(cues) + "\n"
