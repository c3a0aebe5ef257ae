"""Two-party replay: the interviewer on a stereo channel or in its own file → speech-to-text lines with
``speaker="clinician"`` next to the patient's; bad input (a silent interviewer channel, mono audio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.replay import Replayer, ReplayOptions
from client_sdk.synth import SCRIPT, TwoPartyRecording, make_two_party
from mllmdr_core.errors import MediaError
from mllmdr_core.frames import TranscriptLine


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> TwoPartyRecording:
    return make_two_party(tmp_path_factory.mktemp("call"), SCRIPT[:2], interviewer_channel="right")


@pytest.fixture(scope="module")
def replayer(tiny_bundle: Path) -> Replayer:
    return Replayer(tiny_bundle)


def inside(line: TranscriptLine, truth: TranscriptLine, slack_s: float = 0.5) -> bool:
    return truth.start_s - slack_s <= line.start_s and line.end_s <= truth.end_s + slack_s


def assert_parties(lines: list[TranscriptLine], call: TwoPartyRecording) -> None:
    """Every ASR line lies inside a turn of its own speaker; each turn has at least one line."""
    asr = [ln for ln in lines if ln.source == "asr:pocketsphinx"]
    for line in asr:
        assert any(inside(line, t) and t.speaker == line.speaker for t in call.lines), line
    for turn in call.lines:
        assert any(inside(ln, turn) and ln.speaker == turn.speaker and ln.text for ln in asr), turn


def test_stereo_channels_give_both_parties(call: TwoPartyRecording, replayer: Replayer) -> None:
    result = replayer.replay(call.stereo, ReplayOptions(interviewer_channel="right"))
    assert_parties(result.transcript, call)
    assert {ln.speaker for ln in result.transcript} == {"patient", "clinician"}
    prompts = result.assessment.prompts()
    assert len(prompts) == 8


def test_two_files_give_the_same_lines_as_stereo(call: TwoPartyRecording, tiny_bundle: Path) -> None:
    """Fresh replayers: pocketsphinx adapts to its speaker across calls, so a reused one may differ."""
    stereo = Replayer(tiny_bundle).replay(call.stereo, ReplayOptions(interviewer_channel="right")).transcript
    files = Replayer(tiny_bundle).replay(call.patient, ReplayOptions(interviewer_audio=call.interviewer))
    files = files.transcript
    assert_parties(files, call)
    assert [(ln.speaker, ln.text) for ln in files] == [(ln.speaker, ln.text) for ln in stereo]


def test_stereo_without_the_option_is_one_party(call: TwoPartyRecording, replayer: Replayer) -> None:
    """Without ``interviewer_channel`` a stereo file is down-mixed: every line is the patient's (today)."""
    lines = replayer.replay(call.stereo).transcript
    assert lines and {ln.speaker for ln in lines} == {"patient"}


def test_silent_interviewer_channel_gives_no_clinician_lines(
    tmp_path: Path, replayer: Replayer
) -> None:
    """Bad input: one silent channel → no clinician line, the patient's lines as usual (no error)."""
    call = make_two_party(tmp_path, SCRIPT[:2], interviewer_channel="left", silent_interviewer=True)
    result = replayer.replay(call.stereo, ReplayOptions(interviewer_channel="left"))
    assert [ln for ln in result.transcript if ln.speaker == "clinician"] == []
    assert_parties(result.transcript, call.__class__(**{**call.__dict__, "lines": tuple(
        ln for ln in call.lines if ln.speaker == "patient"
    )}))


def test_interviewer_channel_of_a_mono_file_is_refused(call: TwoPartyRecording, replayer: Replayer) -> None:
    with pytest.raises(MediaError, match="needs stereo audio"):
        replayer.replay(call.patient, ReplayOptions(interviewer_channel="left"))
