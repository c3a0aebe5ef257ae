"""Replay report: markdown + self-contained HTML with the indicator plot."""

from __future__ import annotations

import base64
from pathlib import Path

from client_sdk.replay import IndicatorSample, ReplayResult
from client_sdk.report import write_report
from mllmdr_core.assessment import (
    SYNTHETIC_LABEL,
    Assessment,
    Evidence,
    Grounding,
    ItemAssessment,
    ModelInfo,
)
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.media import MediaSource
from mllmdr_core.phq8 import ITEM_KEYS


def _result() -> ReplayResult:
    items = [
        ItemAssessment(
            key=k,
            score=2 if k == "sleep" else 1,
            rationale=f"<b>{k}</b> | reason",
            maa_score=1.5,
            evidence=[Evidence(kind="transcript", text="I wake up at four")],
        )
        for k in ITEM_KEYS
    ]
    a = Assessment(
        session_id="rec",
        kind="final",
        window_start_s=0.0,
        window_end_s=60.0,
        items=items,
        total=9,
        binary=False,
        model=ModelInfo(
            bundle_id="tiny-1", training_data="synthetic", non_clinical=True, backend="transformers"
        ),
        labels=[SYNTHETIC_LABEL],
    )
    series = [
        IndicatorSample(t, {"speech_ratio": 0.1 * (t % 5), "f0_mean_hz": 150 + t}) for t in (2.0, 4.0, 6.0)
    ]
    return ReplayResult(
        source=MediaSource("rec", None, None),
        assessment=a,
        transcript=[TranscriptLine(1.0, 2.0, "patient", "I wake up at four")],
        indicators=series,
        session_indicators={"speech_ratio": 0.4, "f0_mean_hz": 155.0},
        assessed_indicators={},
        media_s=60.0,
        wall_s=12.0,
    )


def test_report_files(tmp_path: Path) -> None:
    md, page = write_report(_result(), tmp_path)
    text = md.read_text()
    assert "PHQ-8 total: 9 / 24" in text and SYNTHETIC_LABEL in text and "negative" in text
    assert "| Sleep | 2 |" in text and "\\|" in text  # pipes in rationales escaped for the table
    assert "real-time factor 5.00×" in text and "![indicators over time](indicators.png)" in text
    png = (tmp_path / "indicators.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert "&lt;b&gt;sleep&lt;/b&gt;" in html  # escaped, never raw markup from model text
    assert base64.b64encode(png).decode()[:40] in html  # plot embedded: one self-contained file


def test_no_series_no_plot(tmp_path: Path) -> None:
    result = _result()
    result.indicators = []
    md, _ = write_report(result, tmp_path)
    assert not (tmp_path / "indicators.png").exists() and "![indicators" not in md.read_text()


def test_ungrounded_sentences_are_marked(tmp_path: Path) -> None:
    result = _result()
    sleep = result.assessment.items[2]
    sleep.rationale = 'Says "I wake up at four". Sleeps <i>5</i> hours. Tired.'
    sleep.grounding = Grounding(score=2 / 3, ungrounded=["Sleeps <i>5</i> hours."])
    md, page = write_report(result, tmp_path)
    assert (
        'Says "I wake up at four". ⚠ **Sleeps <i>5</i> hours.** _(not found in what the model saw)_ Tired.'
        in md.read_text()
    )
    assert (
        "Says &quot;I wake up at four&quot;. "
        "<span class='ungrounded'>Sleeps &lt;i&gt;5&lt;/i&gt; hours.</span> "
        "<span class='ungrounded-label'>(not found in what the model saw)</span> Tired." in page.read_text()
    )
    assert "class='ungrounded'" not in page.read_text().replace(
        "<span class='ungrounded'>Sleeps", "", 1
    ).split("<h2>Items")[1]  # only the one sentence is marked
