"""Transcript readers: our JSON, DAIC-WOZ TSV, E-DAIC CSV, WebVTT, SRT; malformed input names file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mllmdr_core.errors import DatasetError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.transcripts import (
    detect_format,
    dump_json,
    dump_srt,
    dump_vtt,
    parse_transcript,
    read_transcript,
    speaker_from_name,
)

DAIC = (
    "start_time\tstop_time\tspeaker\tvalue\n"
    "36.588\t39.668\tEllie\thi i'm ellie thanks for coming in today\n"
    "62.328\t63.178\tParticipant\tyeah\n"
    "\n"
    "64.0\t66.5\tEllie\thow are you doing today\n"
)
EDAIC = (
    "Start_Time,End_Time,Text,Confidence\n"
    "6.2,8.1,i'm doing fine,0.9344\n"
    '12.0,15.5,"well, i do not sleep much",0.81\n'
)
VTT = (
    "WEBVTT\n\n"
    "NOTE exported by the call platform\n\n"
    "1\n00:00:01.000 --> 00:00:03.500\n<v Dr. Smith>How have you been sleeping?\n\n"
    "00:00:04.000 --> 00:00:06.250\n<v Patient>Not <i>well</i>,\nI wake up at four.\n\n"
    "00:01:07.000 --> 00:01:08.000\nno speaker here\n"
)
SRT = (
    "1\n00:00:01,000 --> 00:00:02,000\nInterviewer: Do you still enjoy things?\n\n"
    "2\n00:00:02,500 --> 00:00:04,000\nPatient: Not really.\n"
)


def test_daic_tsv() -> None:
    lines = parse_transcript(DAIC, "daic")
    assert [(ln.speaker, ln.start_s) for ln in lines] == [
        ("clinician", 36.588),
        ("patient", 62.328),
        ("clinician", 64.0),
    ]
    assert lines[1].text == "yeah" and lines[1].end_s == 63.178 and lines[1].source == "dataset"


def test_edaic_csv_with_quoted_commas_and_confidence() -> None:
    lines = parse_transcript(EDAIC, "edaic")
    assert [ln.text for ln in lines] == ["i'm doing fine", "well, i do not sleep much"]
    assert all(ln.speaker == "patient" for ln in lines)
    assert lines[0].confidence == pytest.approx(0.9344)


def test_daic_strict_reading() -> None:
    """Header names without case/underscores, cells verbatim (no CSV quoting), empty rows left out, sorted."""
    text = (
        "Start_Time\tStop_Time\tSpeaker\tValue\n"
        '5.0\t6.0\tparticipant\ti wake up at "four"\n'
        "1.0\t2.0\tELLIE\thow do you sleep\n"
        "6.5\t7.0\tParticipant\t\n"
    )
    lines = parse_transcript(text, "daic")
    assert [(ln.start_s, ln.speaker, ln.text) for ln in lines] == [
        (1.0, "clinician", "how do you sleep"),
        (5.0, "patient", 'i wake up at "four"'),
    ]


def test_edaic_tolerates_spaced_headers() -> None:
    lines = parse_transcript("Start_Time, End_Time, Text, Confidence\n1.0, 2.0, hello, 0.5\n", "edaic")
    assert lines[0].text == "hello" and lines[0].end_s == 2.0


def test_webvtt_voice_tags_notes_and_multiline() -> None:
    lines = parse_transcript(VTT, "vtt")
    assert [ln.speaker for ln in lines] == ["clinician", "patient", "unknown"]
    assert lines[1].text == "Not well, I wake up at four."
    assert (lines[1].start_s, lines[1].end_s) == (4.0, 6.25)
    assert lines[2].start_s == 67.0


def test_srt_prefixes() -> None:
    lines = parse_transcript(SRT, "srt")
    assert [(ln.speaker, ln.text) for ln in lines] == [
        ("clinician", "Do you still enjoy things?"),
        ("patient", "Not really."),
    ]
    assert lines[1].start_s == 2.5


def test_round_trips() -> None:
    lines = [
        TranscriptLine(1.0, 2.5, "clinician", "how are you"),
        TranscriptLine(3.0, 4.125, "patient", "tired"),
    ]
    assert parse_transcript(dump_json(lines), "json") == lines
    for text, fmt in ((dump_vtt(lines), "vtt"), (dump_srt(lines), "srt")):
        again = parse_transcript(text, fmt)  # type: ignore[arg-type]
        assert [(ln.start_s, ln.end_s, ln.speaker, ln.text) for ln in again] == [
            (ln.start_s, ln.end_s, ln.speaker, ln.text) for ln in lines
        ]


def test_detect_and_read_files(tmp_path: Path) -> None:
    cases = {
        "300_TRANSCRIPT.csv": (DAIC, "daic"),
        "600_Transcript.csv": (EDAIC, "edaic"),
        "call.vtt": (VTT, "vtt"),
        "call.srt": (SRT, "srt"),
        "t.json": ('[{"start_s":0,"end_s":1,"text":"x"}]', "json"),
    }
    for fname, (text, fmt) in cases.items():
        path = tmp_path / fname
        path.write_text(text)
        assert detect_format(path, text) == fmt
        assert read_transcript(path)  # parses with the detected format


def test_json_lines_sorted_and_speaker_names() -> None:
    text = (
        '{"lines": [{"start_s": 5, "end_s": 6, "speaker": "Participant", "text": "b"},'
        ' {"start_s": 1, "end_s": 2, "speaker": "Ellie", "text": "a"}]}'
    )
    lines = parse_transcript(text, "json")
    assert [(ln.text, ln.speaker) for ln in lines] == [("a", "clinician"), ("b", "patient")]
    assert speaker_from_name("Dr. Who") == "clinician" and speaker_from_name("Bob") == "unknown"


@pytest.mark.parametrize(
    ("text", "fmt", "match"),
    [
        (
            "start_time\tstop_time\tspeaker\tvalue\n1.0\tabc\tEllie\thi\n",
            "daic",
            r"<t>:2: stop_time is not a number",
        ),
        ("start_time\tstop_time\tspeaker\n", "daic", r"<t>:1: header lacks column\(s\) value;"),
        ("start_time\tstop_time\tspeaker\tvalue\n1.0\t2.0\n", "daic", r"<t>:2: expected 4 fields, found 2"),
        (
            "start_time\tstop_time\tspeaker\tvalue\n1.0\t2.0\tEllie\thi\textra\n",
            "daic",
            r"<t>:2: expected 4 fields, found 5",
        ),
        (
            "start_time\tstop_time\tspeaker\tvalue\n1.0\t2.0\tInterviewer\thi\n",
            "daic",
            r"<t>:2: unknown speaker 'Interviewer' \(expected Ellie or Participant\)",
        ),
        (
            "start_time\tstop_time\tspeaker\tvalue\n-1.0\t2.0\tEllie\thi\n",
            "daic",
            r"<t>:2: start_time -1.0 is negative",
        ),
        ("start_time\tstop_time\tspeaker\tvalue\nnan\t2.0\tEllie\thi\n", "daic", r"<t>:2: start_time is NaN"),
        ("", "daic", r"<t>:1: empty DAIC-WOZ transcript"),
        (
            "Start_Time,End_Time,Text,Confidence\n5.0,4.0,backwards,0.9\n",
            "edaic",
            r"<t>:2: End_Time 4.0 before Start_Time 5.0",
        ),
        ("Start_Time,End_Time\n", "edaic", r"<t>:1: header lacks column\(s\) Text, Confidence;"),
        ("Start_Time,End_Time,Text\n1.0,2.0,hi\n", "edaic", r"<t>:1: header lacks column\(s\) Confidence;"),
        (
            "Start_Time,End_Time,Text,Confidence\n1.0,2.0,hi,\n",
            "edaic",
            r"<t>:2: Confidence is not a number: ''",
        ),
        ("00:00:01.000 --> 00:00:02.000\nhi\n", "vtt", r"<t>:1: a WebVTT file must start"),
        ("WEBVTT\n\n00:00:01.000 --> 1 minute\nhi\n", "vtt", r"<t>:3: bad timestamp '1'"),
        ("1\nhello there\n\n", "srt", r"<t>:1: expected a cue timing line"),
        ('{"lines": [{"start_s": 1}]}', "json", r"missing end_s, text"),
        ("{not json", "json", r"<t>:1: invalid JSON"),
        ('{"other": 1}', "json", r"expected a list of lines"),
    ],
)
def test_malformed_input_names_file_and_line(text: str, fmt: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        parse_transcript(text, fmt, name="<t>")  # type: ignore[arg-type]


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_transcript(tmp_path / "nope.vtt")
    odd = tmp_path / "notes.txt"
    odd.write_text("just some words\n")
    with pytest.raises(DatasetError, match="cannot tell the transcript format"):
        read_transcript(odd)


def test_files_and_text_agree_for_dataset_formats(tmp_path: Path) -> None:
    """read_transcript (a file, as the dataset readers use it) and parse_transcript give the same lines."""
    for fname, text, fmt in (("300_TRANSCRIPT.csv", DAIC, "daic"), ("600_Transcript.csv", EDAIC, "edaic")):
        path = tmp_path / fname
        path.write_text(text)
        from_file = [(ln.start_s, ln.end_s, ln.speaker, ln.text) for ln in read_transcript(path)]
        from_text = [(ln.start_s, ln.end_s, ln.speaker, ln.text) for ln in parse_transcript(text, fmt)]
        assert from_file == from_text


def test_nonverbal_tokens_have_one_cue_form() -> None:
    from mllmdr_core.transcripts import normalize_nonverbal

    assert normalize_nonverbal("well <sigh> i [Laughter] guess") == "well [sigh] i [laughter] guess"
    assert (
        normalize_nonverbal("xxx i went xxxx to the exit")
        == "[unintelligible] i went [unintelligible] to the exit"
    )
    assert (
        normalize_nonverbal("<deep_breath>") == "[deep breath]"
        and normalize_nonverbal("x-ray taxi") == "x-ray taxi"
    )
    lines = parse_transcript("Start_Time,End_Time,Text,Confidence\n1,2,<laughter> xxx,0.9\n", "edaic")
    assert [ln.text for ln in lines] == ["[laughter] [unintelligible]"]
