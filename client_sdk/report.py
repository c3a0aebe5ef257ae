"""Human-readable replay report: markdown + self-contained HTML with the indicator plots (matplotlib Agg)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mllmdr_core.assessment import ItemAssessment
from mllmdr_core.grounding import segments
from mllmdr_core.phq8 import PHQ8_ITEMS, TOTAL_MAX

if TYPE_CHECKING:
    from client_sdk.replay import IndicatorSample, ReplayResult

PLOT_FILE = "indicators.png"
_CSS = """
body { font: 14px system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em }
table { border-collapse: collapse; width: 100% }
td, th { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: top }
.label { background: #fff3cd; padding: 6px; border: 1px solid #e0c36c }
.pos { color: #a40000; font-weight: bold }
.ungrounded { background: #fde2e2; text-decoration: underline wavy #a40000 }
.ungrounded-label { color: #a40000; font-size: 85%; font-style: italic }
"""
UNGROUNDED_LABEL = "not found in what the model saw"
_TITLES = {item.key: item.title for item in PHQ8_ITEMS}


def _units() -> dict[str, str]:
    from mllmdr_core.features.indicators import INDICATOR_INFO

    return {name: str(getattr(info, "unit", "")) for name, info in INDICATOR_INFO.items()}


def plot_indicators(samples: Sequence[IndicatorSample], path: Path, *, title: str = "") -> Path | None:
    """One small panel per indicator over media time; returns the PNG path (None when nothing to plot)."""
    names = sorted({k for s in samples for k in s.values if k not in ("t_s", "window_s")})
    if not samples or not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = _units()
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.2 * rows), squeeze=False, sharex=True)
    t = [s.media_time_s for s in samples]
    for ax, name in zip(axes.flat, names, strict=False):
        y = [s.values.get(name, float("nan")) for s in samples]
        ax.plot(t, y, lw=1.2)
        unit = units.get(name, "")
        ax.set_title(f"{name} ({unit})" if unit else name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("media time (s)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _ungrounded(item: ItemAssessment) -> list[str]:
    return item.grounding.ungrounded if item.grounding is not None else []


def _rationale_md(item: ItemAssessment) -> str:
    """The rationale with ungrounded sentences marked ⚠ and labelled (``grounding.segments``)."""
    parts = [
        f"⚠ **{t.strip()}** _({UNGROUNDED_LABEL})_" if bad else t
        for t, bad in segments(item.rationale, _ungrounded(item))
    ]
    return "".join(parts).strip().replace("|", "\\|")


def _rationale_html(item: ItemAssessment) -> str:
    e = html.escape
    return "".join(
        f"<span class='ungrounded'>{e(t)}</span> "
        f"<span class='ungrounded-label'>({e(UNGROUNDED_LABEL)})</span>"
        if bad
        else e(t)
        for t, bad in segments(item.rationale, _ungrounded(item))
    )


def render_markdown(result: ReplayResult, plot: str | None) -> str:
    a = result.assessment
    out = [f"# Replay report — session `{a.session_id}`", ""]
    out += [f"> **{label}**" for label in a.labels]
    out += [f"> {a.disclaimer}", ""]
    out += [
        f"**PHQ-8 total: {a.total} / {TOTAL_MAX}** — screen "
        f"{'POSITIVE (≥ 10)' if a.binary else 'negative (< 10)'}; MAA total {_fmt(a.maa_total)}",
        "",
        f"Model bundle `{a.model.bundle_id}` (training data: {a.model.training_data}; "
        f"backend {a.model.backend}); "
        f"transcript source: {a.model.transcript_source}"
        + (" — **low-accuracy transcript**" if a.model.low_accuracy_transcript else ""),
        "",
        f"Replayed {result.media_s:.1f} s of media in {result.wall_s:.1f} s "
        f"(real-time factor {result.rtf:.2f}×).",
        "",
        "## Items",
        "",
        "| Item | Score | MAA | Rationale | Evidence |",
        "|---|---|---|---|---|",
    ]
    for item in a.items:
        evidence = "; ".join(e.text for e in item.evidence[:3]).replace("|", "\\|")
        rationale = _rationale_md(item)
        flag = " (fallback)" if item.fallback else ""
        out.append(
            f"| {_TITLES.get(item.key, item.key)} | {item.score}{flag} | {_fmt(item.maa_score)} | "
            f"{rationale} | {evidence} |"
        )
    units = _units()
    out += ["", "## Indicators (whole session)", "", "| Indicator | Value | Unit |", "|---|---|---|"]
    for name, value in sorted(result.session_indicators.items()):
        if name in ("t_s", "window_s"):
            continue
        out.append(f"| {name} | {_fmt(value)} | {units.get(name, '')} |")
    for name, reason in sorted(result.indicators_unavailable.items()):
        out.append(f"| {name} | not available ({reason}) | {units.get(name, '')} |")
    if plot:
        out += ["", f"![indicators over time]({plot})"]
    out += ["", f"## Transcript ({len(result.transcript)} lines)", ""]
    out += [f"- `{ln.start_s:7.2f}` **{ln.speaker}**: {ln.text}" for ln in result.transcript]
    return "\n".join(out) + "\n"


def render_html(result: ReplayResult, plot_png: bytes | None) -> str:
    a = result.assessment
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Replay report {e(a.session_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Replay report — session <code>{e(a.session_id)}</code></h1>",
    ]
    parts += [f"<p class='label'><b>{e(label)}</b></p>" for label in a.labels]
    parts.append(f"<p><i>{e(a.disclaimer)}</i></p>")
    screen = "<span class='pos'>POSITIVE (≥ 10)</span>" if a.binary else "negative (&lt; 10)"
    parts.append(
        f"<p><b>PHQ-8 total: {a.total} / {TOTAL_MAX}</b> — screen {screen}; "
        f"MAA total {e(_fmt(a.maa_total))}</p>"
    )
    low = " — <b>low-accuracy transcript</b>" if a.model.low_accuracy_transcript else ""
    parts.append(
        f"<p>Model bundle <code>{e(a.model.bundle_id)}</code> (training data: {e(a.model.training_data)};"
        f" backend {e(a.model.backend)}); transcript source: {e(a.model.transcript_source)}{low}</p>"
    )
    parts.append(
        f"<p>Replayed {result.media_s:.1f} s of media in {result.wall_s:.1f} s "
        f"(real-time factor {result.rtf:.2f}×).</p>"
    )
    parts.append(
        "<h2>Items</h2><table><tr><th>Item</th><th>Score</th><th>MAA</th><th>Rationale</th>"
        "<th>Evidence</th></tr>"
    )
    for item in a.items:
        ev = "<br>".join(e(x.text) for x in item.evidence[:5])
        flag = " (fallback)" if item.fallback else ""
        parts.append(
            f"<tr><td>{e(_TITLES.get(item.key, item.key))}</td><td>{item.score}{flag}</td>"
            f"<td>{e(_fmt(item.maa_score))}</td><td>{_rationale_html(item)}</td><td>{ev}</td></tr>"
        )
    parts.append(
        "</table><h2>Indicators (whole session)</h2><table><tr><th>Indicator</th><th>Value</th>"
        "<th>Unit</th></tr>"
    )
    units = _units()
    for name, value in sorted(result.session_indicators.items()):
        if name not in ("t_s", "window_s"):
            parts.append(
                f"<tr><td>{e(name)}</td><td>{e(_fmt(value))}</td><td>{e(units.get(name, ''))}</td></tr>"
            )
    for name, reason in sorted(result.indicators_unavailable.items()):
        cell = f"not available ({reason})"
        parts.append(f"<tr><td>{e(name)}</td><td>{e(cell)}</td><td>{e(units.get(name, ''))}</td></tr>")
    parts.append("</table>")
    if plot_png:
        data = base64.b64encode(plot_png).decode("ascii")
        parts.append(
            f"<p><img alt='indicators over time' style='max-width:100%' src='data:image/png;base64,{data}'>"
            "</p>"
        )
    parts.append(f"<details><summary>Transcript ({len(result.transcript)} lines)</summary><ul>")
    parts += [
        f"<li><code>{ln.start_s:.2f}</code> <b>{e(ln.speaker)}</b>: {e(ln.text)}</li>"
        for ln in result.transcript
    ]
    parts.append("</ul></details></body></html>")
    return "\n".join(parts)


def write_report(result: ReplayResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` (self-contained) and ``indicators.png`` into ``out_dir``."""
    plot = plot_indicators(
        result.indicators, out_dir / PLOT_FILE, title=f"session {result.assessment.session_id}"
    )
    md = out_dir / "report.md"
    md.write_text(render_markdown(result, PLOT_FILE if plot else None))
    page = out_dir / "report.html"
    page.write_text(render_html(result, plot.read_bytes() if plot else None))
    return md, page
