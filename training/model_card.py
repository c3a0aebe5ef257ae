"""The bundle's own documents: ``report.json`` (its evaluation, one object per split scored) and a
Hugging Face–style model card ``README.md``. Both live in the bundle directory outside the hashed set
(``mllmdr_core.bundle.DOC_FILES``) and name the ``bundle_id`` they describe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.eval import INTERVAL_METRICS, item_mae_table, selection_markdown, with_interval

REPORT = "report.json"
CARD = "README.md"
ABLATION_LABELS = {  # what each eval ablation feeds the trained model (inference-time, not retrained)
    "all": "all: text + audio + video",
    "text": "text only",
    "text_audio": "text + audio",
    "text_video": "text + video",
    "av": "audio + video, no text",
    "no_lqformer": "all inputs, LQ-former query decoders bypassed",
}
_HEAD = {"precision": "P", "recall": "R", "f1": "F1", "mae": "MAE", "rmse": "RMSE", "ccc": "CCC"}
_KEEP = ("n", *INTERVAL_METRICS, "accuracy", "item_mae", "grounded_share", "fallback_share", "intervals")


def _compact(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in _KEEP if k in m}


def split_report(results: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle report's object for the evaluated split (``results`` from ``evaluate_bundle``)."""
    abl = results["ablations"]
    meta = results.get("meta", {})
    ledger = results.get("test_ledger") or {}
    main = abl.get("all", next(iter(abl.values())))
    masked_n = int(meta.get("masked_sessions", main.get("masked", {}).get("n", 0)))
    out: dict[str, Any] = {
        "split": meta.get("split"),
        "n_sessions": meta.get("n_sessions", main["all"]["n"]),
        "grounding": main["all"]["grounded_share"],
        "evaluations": ledger.get("evaluations"),
        "rescored": bool(ledger.get("forced", False)),
        "fingerprint": ledger.get("fingerprint"),
        "content_held_out": results.get("content_held_out"),
        "indicators_in_prompt": meta.get("indicators_in_prompt"),  # the bundle options scored here
        "grounded_decoding": meta.get("grounded_decoding"),
        "metrics": _compact(main["all"]),
        "masked": {"n": masked_n, **({k: _compact(e["masked"]) for k, e in abl.items() if "masked" in e})},
        "ablations": {
            name: {
                "inputs": ABLATION_LABELS.get(name, name),
                "all": _compact(e["all"]),
                **({"masked": _compact(e["masked"])} if "masked" in e else {}),
            }
            for name, e in abl.items()
        },
        "targets": results.get("targets", {}),
    }
    rnd = results.get("test_round")
    if rnd:  # which fresh test split; the sessions of earlier rounds, scored before, are in no split
        out["round"] = rnd["round"]
        out["retired"] = dict(rnd["retired"])
    if results.get("selection"):
        out["selection"] = results["selection"]  # the dev comparison that chose the bundle's options
    return out


def write_bundle_report(bundle_dir: Path, bundle_id: str, results: Mapping[str, Any]) -> Path:
    """Write (merge) ``report.json`` in the bundle: the evaluated split's object beside earlier ones of
    the same bundle (a report of another bundle id is replaced)."""
    path = bundle_dir / REPORT
    old = json.loads(path.read_text()) if path.exists() else {}
    data = old if old.get("bundle_id") == bundle_id else {}
    data["bundle_id"] = bundle_id
    data[str(results.get("meta", {}).get("split", "eval"))] = split_report(results)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _table(report: Mapping[str, Any]) -> list[str]:
    rows = [
        "| inputs | n | " + " | ".join(_HEAD[k] for k in INTERVAL_METRICS) + " | grounded |",
        "|---" * (len(INTERVAL_METRICS) + 3) + "|",
    ]
    for e in report["ablations"].values():
        for subset in ("all", "masked"):
            if subset not in e:
                continue
            m, ci = e[subset], e[subset].get("intervals", {})
            cells = " | ".join(with_interval(m[k], ci.get(k)) for k in INTERVAL_METRICS)
            label = e["inputs"] + (" — masked subset" if subset == "masked" else "")
            rows.append(f"| {label} | {m['n']} | {cells} | {m.get('grounded_share', 0.0):.2f} |")
    return rows


def _item_table(report: Mapping[str, Any]) -> list[str]:
    """Per-item MAE of the all-inputs row with its bootstrap interval (empty without item labels)."""
    rows = item_mae_table(report.get("metrics", {}))
    return ["Per-item MAE (all inputs, 0–3 scale):", "", *rows] if rows else []


def model_card(report: Mapping[str, Any], manifest: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """The model card: YAML front matter, intended use, label, training data, evaluation, limitations.

    ``training``: ``corpus_kind``, ``dataset``, ``sessions`` ({split: n}) and optionally ``corpus``
    (the synthetic corpus summary)."""
    non_clinical = bool(manifest.get("non_clinical", True))
    synthetic = training.get("corpus_kind") == "synth"
    dataset = str(training.get("dataset", "unknown"))
    sessions = dict(training.get("sessions", {}))
    front = [
        "---",
        "license: apache-2.0",
        "library_name: mllmdr-live",
        "tags:",
        *(f"  - {t}" for t in ("depression-screening", "phq-8", "multimodal", "audio", "video")),
        *(["  - synthetic-data"] if synthetic else []),
        *(["  - non-clinical"] if non_clinical else []),
        "datasets:",
        f"  - {dataset}",
        f"non_clinical: {str(non_clinical).lower()}",
        f"training_data: {manifest.get('training_data', 'unknown')}",
        f"bundle_id: {manifest.get('bundle_id', report.get('bundle_id', ''))}",
        "---",
        "",
    ]
    lines = [
        *front,
        f"# MLlm-DR Live bundle `{manifest.get('bundle_id', '')}`",
        "",
        "## Intended use",
        "",
        "A screening aid that estimates the eight PHQ-8 items from an interview's transcript, voice and face "
        "and explains each estimate. It is **not a diagnosis** and not a medical device: a clinician reads "
        "the rationale and decides.",
        "",
    ]
    if non_clinical:
        lines += [
            "## Non-clinical",
            "",
            "This bundle is labelled **non-clinical**"
            + (" — it was trained on synthetic interviews only" if synthetic else "")
            + ". Its scores say nothing about real people; it exists to exercise the software.",
            "",
        ]
    split_rows = ", ".join(f"{k} {v}" for k, v in sessions.items())
    lines += [
        "## Training data",
        "",
        f"- corpus kind: `{training.get('corpus_kind', 'unknown')}`; dataset: {dataset}",
        f"- sessions per split: {split_rows}",
    ]
    corpus = training.get("corpus") or {}
    if corpus:
        cfg = corpus.get("config", {})
        lines.append(
            f"- generated with seed {cfg.get('seed')}; modes over all splits: "
            + ", ".join(f"{k} {v}" for k, v in corpus.get("modes", {}).items())
            + " (words_neutral = masked: signal only in voice and face)"
        )
    lines.append("")
    for split in ("test", "dev"):
        rep = report.get(split)
        if not rep:
            continue
        held = rep.get("content_held_out") or {}
        times = rep.get("evaluations")
        lines += [
            f"## Evaluation ({split} split, {rep['n_sessions']} sessions, {rep['masked']['n']} masked)",
            "",
        ]
        if times is not None:
            note = " (re-scored on request: no longer held-out figures)" if rep.get("rescored") else ""
            lines.append(
                f"The {split} split has been scored {times} time(s){note}; model choices read dev only."
            )
        if rep.get("round") is not None:
            retired = rep.get("retired") or {}
            lines.append(
                f"Test round {rep['round']}"
                + (
                    f": the {retired['n']} sessions of the earlier rounds' test splits were retired after "
                    f"being scored (in no split since: {retired.get('reason', '')})."
                    if retired.get("n")
                    else ": the first test split of this corpus."
                )
            )
            if synthetic and rep["round"] > 1:
                lines.append(
                    "Its sessions are new draws (plans, voice and face parameters) from the same held-out "
                    "banks as the earlier rounds: new sessions, not new content — most of their answers "
                    "also occur in the earlier rounds' test answers (never in training)."
                )
        if held:
            lines.append(
                f"Content held out: {held.get('held_out')}; shared word 5-grams with training answers "
                f"{held.get('shared_5gram_share', 0.0):.3f}, "
                f"verbatim answers {held.get('verbatim_answers', 0)}."
            )
        lines += [
            f"Indicators in the prompt: {'on' if rep.get('indicators_in_prompt') else 'off'}; grounded "
            f"decoding: {'on' if rep.get('grounded_decoding') else 'off'}. "
            f"Grounding share (all inputs): {rep['grounding']:.2f}. Totals are PHQ-8 sums; "
            "P/R/F1 of total ≥ 10. Intervals: 95 % session-level percentile bootstrap (1000 resamples).",
            "",
            *_table(rep),
            "",
        ]
        lines += _item_table(rep)
        for name, t in rep.get("targets", {}).items():
            value = with_interval(t["value"], t.get("interval"))
            lines.append(
                f"- target {name}: {value} (required {t['target']}: {'met' if t['met'] else 'NOT met'})"
            )
        lines.append("")
        lines += [ln.replace("## ", "### ", 1) for ln in selection_markdown(rep.get("selection"))]
    lines += [
        "## Limitations",
        "",
        "- Small model and small evaluation split: the intervals above are wide.",
        "- Synthetic speech (espeak-ng) and one animated face photo (mirrored for the test split): the "
        "acoustic and visual cues are planted and far simpler than real behaviour."
        if synthetic
        else "- Trained on one interview dataset; other settings, languages and populations are untested.",
        grounding_limit(report),
        "- PHQ-8 estimates from an interview are not the questionnaire and not a diagnosis.",
        "",
    ]
    return "\n".join(lines)


def grounding_limit(report: Mapping[str, Any]) -> str:
    """The card's limitation line on rationales, for the bundle's decoding."""
    if any((report.get(split) or {}).get("grounded_decoding") for split in ("test", "dev")):
        return (
            "- Grounded decoding: quotes are whole lines of the prompt's transcript and numbers come from "
            "the prompt, but the wording around them is not checked: a sentence can misread its quote or "
            "contradict the score."
        )
    return "- The rationale may still state things the prompt did not hold; check the grounding mark."


def write_model_card(bundle_dir: Path, manifest: Mapping[str, Any], training: Mapping[str, Any]) -> Path:
    """Render ``README.md`` in the bundle from its ``report.json`` (absent: no evaluation section)."""
    path = bundle_dir / REPORT
    report = json.loads(path.read_text()) if path.exists() else {}
    out = bundle_dir / CARD
    out.write_text(model_card(report, manifest, training))
    return out
