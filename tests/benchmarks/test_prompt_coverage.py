"""``bench/prompt_coverage.py``'s core on one short synthetic session, in the three live modes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.prompt_coverage import measure_session, plan, render  # noqa: E402
from mllmdr_core.assess import Assessor  # noqa: E402
from mllmdr_core.bundle import load_bundle  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_short_session_in_the_three_modes() -> None:
    assessor = Assessor(load_bundle(ROOT / "bundles" / "demo"))
    session = render(plan(0, minutes=0, answers=4))  # 4 answers, about 40 s
    assert session.answers == 4 and 20 < session.duration_s < 90
    figures = measure_session(
        session, assessor.bundle.config, lambda text: assessor.fits(text, 2), assessor.max_pairs
    )
    captions, two_track, patient_only = figures["captions"], figures["two_track"], figures["patient_only"]
    # captions: the planted transcript, short enough to fit the budget → every patient word is shown
    assert captions["transcript_coverage"] == 1.0
    assert captions["wer"] == 0.0 and captions["pairs"] == 4 and captions["question_share"] == 1.0
    assert 1.0 <= captions["pairs_per_item"] <= assessor.max_pairs
    assert captions["lost"] == []  # no patient line left out of every prompt
    # speech-to-text: real recognition errors, real pairs
    for mode in (two_track, patient_only):
        assert 0.0 <= mode["transcript_coverage"] <= 1.0
        assert 0.0 < mode["wer"] < 0.9
        assert mode["patient_words"] > 10 and mode["pairs"] >= 2
        # the lines in no prompt, each with its reason, account for at most the uncovered words
        assert {x["reason"] for x in mode["lost"]} <= {"pairing", "relevance", "slots", "budget"}
        lost = sum(x["words"] for x in mode["lost"])
        assert lost <= round((1 - mode["transcript_coverage"]) * mode["patient_words"])
    assert two_track["question_share"] > 0.5  # the interviewer's track gives the questions
    assert patient_only["question_share"] == 0.0  # turns without questions
    assert patient_only["pairs"] <= 6  # one pair per turn, never one per word
