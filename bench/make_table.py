"""The figures table of ``docs/benchmarks.md``, generated from the current files in ``bench/results/``.

Run: ``.venv/bin/python bench/make_table.py [--write]`` — prints the table; ``--write`` replaces the
part of ``docs/benchmarks.md`` between :data:`BEGIN` and :data:`END` with it. Each benchmark keeps ONE
current result file, ``bench/results/<name>.json`` (earlier runs live in git history); a row gives its
headline figures, the target where there is one, machine, load average, date and command, all read from
the file. ``tests/test_bench_table.py`` fails when the committed table differs from a fresh generation.
Standard library only: no project imports.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- BEGIN GENERATED TABLE (bench/make_table.py --write) -->"
END = "<!-- END GENERATED TABLE -->"
HEADER = (
    "| benchmark | figures | target | met | machine | load 1/5/15 min (end) | date (UTC) | command |\n"
    "|---|---|---|---|---|---|---|---|"
)
Doc = dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    figures: str
    target: str = "–"
    met: bool | None = None
    source: Doc | None = None  # provenance (date, command, load, machine) when not the file's own


def _num(x: float) -> str:
    return f"{x:g}"


def _machine(doc: Doc) -> str:
    m = doc.get("machine")
    if isinstance(m, dict):
        if "device" in m:
            return str(m["device"])
        cores = m.get("cores") or m.get("cpu_count")
        cpu = m.get("cpu") or m.get("platform", "")
        mem = f", {m['mem_gb']} GB" if "mem_gb" in m else ""
        return f"{cores} × {cpu}{mem}" if cores else f"{cpu}{mem}"
    threads = doc.get("threads")
    return f"{m or doc.get('cpu', '')}, {threads} torch threads" if threads else str(m or "")


def _load(doc: Doc) -> str:
    load = doc.get("load_avg_end") or doc.get("loadavg_end")
    if load:
        return "/".join(f"{x:.2g}" if x < 10 else f"{x:.3g}" for x in load)
    if isinstance(doc.get("machine"), dict) and "load_avg_1m" in doc["machine"]:
        return f"{doc['machine']['load_avg_1m']} (1 min)"
    return str(doc.get("load_text", "–"))


def _date(value: object) -> str:
    """``2026-11-26 14:51`` whatever the script wrote (ISO ``T…Z`` included)."""
    if not value:
        return "–"
    return " / ".join(part.replace("T", " ").removesuffix("Z")[:16] for part in str(value).split(" / "))


def live_sessions(doc: Doc) -> list[Row]:
    rows = []
    for kind, best in doc["largest_real_time_n"].items():
        tags = {r.get("run") for r in doc["rows"][kind]}
        runs = [r for r in doc.get("runs", []) if r["tag"] in tags]
        source = {
            **doc,
            "date_utc": " / ".join(r["date_utc"] for r in runs) or doc["date_utc"],
            "command": " ; ".join(r["command"] for r in runs) or doc["command"],
            "load_avg_end": runs[-1]["load_avg_end"] if runs else doc.get("load_avg_end"),
        }
        one = [r for r in doc["rows"][kind] if r.get("servers", 1) == 1]
        at = [r["lag_p95_s"] for r in one if r["n"] == best]
        figure = f"{kind}: largest real-time N = **{best}**"
        if at:
            figure += f" (lag p95 {_num(max(at))} s)"
        over = sorted({r["n"] for r in one if r["n"] > best and not r["real_time"]})
        if over:
            worst = max(r["lag_p95_s"] for r in one if r["n"] == over[0] and not r["real_time"])
            figure += f"; N = {over[0]}: p95 {_num(worst)} s, not real time"
        need = 8 if kind == "demo" else 4
        rows.append(Row(f"live_sessions ({kind})", figure, f"≥ {need}", best >= need, source))
    return rows


def live_model(doc: Doc) -> list[Row]:
    """``--model-in-loop`` runs: largest real-time N with checkpoints + finals, and hang-up → final there.
    One file per place the server runs the model (``assess_worker``: server threads or worker process)."""
    rows = []
    where = {"thread": "server threads"}.get(doc.get("server_env", {}).get("assess_worker"), "worker process")
    period = doc["model_in_loop"]["checkpoint_period_s"]
    runs = doc.get("runs", [])
    source = {
        **doc,
        "date_utc": " / ".join(r["date_utc"] for r in runs) or doc["date_utc"],
        "command": " ; ".join(r["command"] for r in runs) or doc["command"],
    }
    for kind, best in doc["largest_real_time_n"].items():
        figure = f"{kind}, checkpoint every {period:g} s + finals: largest real-time N = **{best}**"
        at = [r for r in doc["rows"][kind] if r["n"] == best]
        if at:
            r = at[0]
            final = f"p50 **{_num(r['final_latency_p50_s'])} s** / p95 **{_num(r['final_latency_p95_s'])} s**"
            figure += (
                f" (lag p95 {_num(r['lag_p95_s'])} s; hang-up → final {final}; "
                f"checkpoint p95 {_num(r['checkpoint_latency_p95_s'])} s)"
            )
        over = sorted(r["n"] for r in doc["rows"][kind] if r["n"] > best and not r["real_time"])
        if over:
            r = next(r for r in doc["rows"][kind] if r["n"] == over[0])
            lag = "–" if r["lag_p95_s"] is None else f"{_num(r['lag_p95_s'])} s"
            figure += f"; N = {over[0]}: p95 {lag}, {r['dropped_audio']:g} audio frames dropped"
        need = 8 if kind == "demo" else 4
        label = f"live_model ({kind}, model in {where})"
        rows.append(Row(label, figure, f"≥ {need}", best >= need, source))
    return rows


def hangup_latency(doc: Doc) -> list[Row]:
    s, o = doc["streaming"], doc["offline"]
    figure = (
        f"{doc['minutes']:g}-min session: hang-up → final **{s['hangup_latency_s']} s** vs offline "
        f"{o['total_s']} s = **{doc['ratio_pct']} %**"
    )
    return [Row("hangup_latency", figure, "≤ 5 %", bool(doc["meets_target"]))]


def long_session(doc: Doc) -> list[Row]:
    figure = (
        f"{doc['minutes']:g}-min session: RSS {doc['rss_start_mb']} → {doc['rss_end_mb']} MB, slope "
        f"**{doc['slope_mb_per_hour_second_half']} MB/h** (2nd half), peak {doc['rss_peak_mb']} MB; "
        f"end → final {doc['end_to_final_s']} s"
    )
    return [Row("long_session", figure, "flat")]


def _batch_ceiling(run: dict[str, Any]) -> str:
    """The CPU-second ceiling of the 2-vs-1-worker figure (runs written before it was measured: none)."""
    c = run.get("batch_ceiling")
    if not c:
        return ""
    return (
        f"; ceiling from CPU seconds {c['speedup_ceiling']}× ({c['speedup_ceiling_endless_folder']}× for an "
        f"endless folder: one replay keeps {c['one_recording_cores_in_use']} of {c['cores']} cores busy, "
        f"{c['cpu_s_per_recording_1_thread']} CPU s per recording, {c['start_cpu_s_per_worker']} CPU s "
        "start per worker"
        + (
            f"; batch rerun {run['batch']['date_utc']} UTC, load "
            f"{run['batch']['one_worker']['load_avg'][0]} / {run['batch']['two_workers']['load_avg'][0]}, "
            f"`{run['batch']['command']}`"
            if "date_utc" in run["batch"]
            else ""
        )
        + ")"
    )


def replay(doc: Doc) -> list[Row]:
    rows = []
    runs, targets = doc["runs"], doc["targets"]
    if "demo" in runs:
        r = runs["demo"]
        asr, batch = r["speech_to_text"], r["batch"]
        figure = (
            f"{r['recording_s']:g}-s recording + transcript: **{r['fast']['real_time_factor']}×** "
            f"(server's 20 ms loop {r['plain']['real_time_factor']}×); speech-to-text on: replay "
            f"**{asr['wall_over_recogniser']}×** the recogniser's {asr['recogniser_s']} s "
            f"(RTF {asr['real_time_factor']}); batch of {batch['one_worker']['sessions']}, 2 workers vs 1: "
            f"**{r['batch_speedup']}×** ({batch['two_workers']['aggregate_rtf']}× vs "
            f"{batch['one_worker']['aggregate_rtf']}× aggregate, process start and bundle load included)"
            + _batch_ceiling(r)
            + f" ({r['bundle']})"
        )
        target = f"≥ {targets['demo_rtf']:g}×; ≤ {targets['asr_ratio']:g}×; ≥ {targets['batch_speedup']:g}×"
        rows.append(Row("replay (demo)", figure, target, all(r["met"].values()), {**doc, **r}))
    if "base" in runs:
        r = runs["base"]
        figure = (
            f"{r['recording_s']:g}-s recording + transcript: fp32 **{r['fp32']['real_time_factor']}×**, "
            f"int8 **{r['int8']['real_time_factor']}×** ({r['bundle']})"
        )
        target = f"≥ {targets['base_rtf']:g}×"
        rows.append(Row("replay (base)", figure, target, r["met"]["base_rtf"], {**doc, **r}))
    return rows


def encoder_streaming(doc: Doc) -> list[Row]:
    cost, cos = doc["encoder_cost"], doc["cosine_vs_whole"]
    h = doc["config"]["hubert"]
    fp32, int8 = cost["fp32"]["x_realtime"], cost["int8"]["x_realtime"]
    figure = (
        f"HuBERT {h['hidden_size']} hidden × {h['num_hidden_layers']} layers, "
        f"{doc['config']['window_s']:g} s windows: fp32 **{fp32:.1f}x** real time, int8 **{int8:.1f}x** "
        f"(cosine to fp32 {cost['int8']['cosine_to_fp32']:.4f}); cosine to whole-utterance encoding by left "
        "context " + ", ".join(f"{float(k):g} s {v['mean']:.3f}" for k, v in cos.items())
    )
    return [Row("encoder_streaming", figure)]


def transcribe_wer(doc: Doc) -> list[Row]:
    rows = []
    for source, sets in doc["results"].items():
        figure = ", ".join(
            f"{name} WER **{r['wer']:.2f}** (RTF {r['rtf']:.2f}, CPU RTF {r['cpu_rtf']:.2f})"
            for name, r in sets.items()
        )
        rows.append(Row(f"transcribe_wer ({source})", figure))
    return rows


def gpu_check(doc: Doc) -> list[Row]:
    emb = ", ".join(
        f"{r['concurrency']} concurrent × {r['sessions_per_call']} per call: p50 {r['p50_s']} s "
        f"({r['generated_tokens_per_s']} tok/s)"
        for r in doc["embedded"]
    )
    t = doc["train_step"]
    figure = (
        f"{doc['model']}: embedded generation {emb}; train step {t['step_s_median_rest']} s "
        f"({t['batch_items']} items × {t['tokens_per_item']} tokens, peak {t['peak_mem_gib']} GiB)"
    )
    return [Row("gpu_check", figure)]


def gpu_vllm(doc: Doc) -> list[Row]:
    emb = doc["embedded"]
    levels = ", ".join(f"{c}: p50 {v['p50_s']} s / p95 {v['p95_s']} s" for c, v in emb.items() if c.isdigit())
    vllm = "vLLM not available on that machine" if not doc.get("vllm_available") else f"vLLM {doc['vllm']}"
    figure = (
        f"{doc['items']} items × ({doc['soft_tokens']} soft + {doc['text_tokens']} text), "
        f"{doc['new_tokens']} new tokens, embedded by concurrency {levels}, peak {emb['peak_mem_gib']} GiB; "
        f"payload {doc['payload']['assessment_base64_mib']} MiB per assessment; {vllm}"
    )
    return [Row("gpu_vllm", figure)]


def vllm_native_tiny(doc: Doc) -> list[Row]:
    payload = doc["payload_bytes_per_assessment_d4096_detail"]
    lat = doc["latency_ms_per_assessment"]
    prefill = doc["prefill_tokens_per_assessment"]
    mib = 1024 * 1024
    figure = (
        f"vLLM plugin, {doc['device']}, generation + MAA pooling servers: payload per assessment at "
        f"d = 4096 **{doc['payload_bytes_per_assessment_d4096'] / mib:.2f} MiB** ({doc['wire']}; "
        f"(32, 4096) bf16 soft tokens instead {payload['soft_tokens_shared'] / mib:.2f} MiB; whole prompt "
        f"embeddings {payload['prompt_embeds'] / mib:.1f} MiB); stream-server LLM params "
        f"**{doc['stream_llm_params']}**; MAA from vLLM {doc['maa_from_server']} (max diff "
        f"{doc['maa_max_abs_diff']:.1e}); text equal to embedded {doc['text_equal']}; prefill tokens "
        f"computed per assessment (generation server, prefix cache on) {prefill['per_item']} → "
        f"{prefill['shared_prefix']} with shared-prefix prompts (MAA server "
        f"{prefill['detail']['per_item']['maa_server']}); latency p50 {lat['p50']} ms, p95 {lat['p95']} ms "
        f"({lat['runs']} runs)"
    )
    met = doc["stream_llm_params"] == 0 and doc["payload_bytes_per_assessment_d4096"] <= mib
    return [Row("vllm_native (tiny)", figure, "≤ 1 MiB, 0 LLM params", met)]


def vllm_native_gpu(doc: Doc) -> list[Row]:
    """``bench/vllm_native.py`` without ``--tiny`` (``vllm_native_gpu.json``): not registered in
    BENCHMARKS until a GPU run's file is committed (tests/benchmarks/test_vllm_native.py renders one)."""

    def side(v: Doc) -> str:
        return f"p50 {v['p50_s']} / p95 {v['p95_s']} s, {v['gen_tokens_per_s']} tok/s"

    plugin = doc.get("plugin", {})
    levels = "; ".join(
        f"{n} sessions: embedded {side(e)}"
        + (
            f", plugin {side(plugin[n])} (LLM stage p95 {plugin[n]['llm_stage_p95_s']} s)"
            if n in plugin
            else ""
        )
        for n, e in doc["embedded"].items()
    )
    targets = doc["targets"]
    verdicts = [t["met"] for t in targets.values()]
    met = False if False in verdicts else (True if all(v is True for v in verdicts) else None)
    figure = (
        f"{doc['model']} on {doc['device']}, {doc['items']} items × ~{doc['prompt_tokens_per_item']:.0f} "
        f"prompt tokens, ≤ {doc['new_tokens']} new: {levels}"
        + ("" if plugin else " (plugin not run: --embedded-only)")
        + "; targets: "
        + ", ".join(f"{k} {t['value']} → {'–' if t['met'] is None else t['met']}" for k, t in targets.items())
    )
    return [Row(f"vllm_native ({doc['mode']})", figure, "p95 ≤ 1.5 s at 8 sessions, ≥ 5× tok/s", met)]


def visual_validation(doc: Doc) -> list[Row]:
    pose, r, b = doc["pose"], doc["correlations"], doc["blinks"]
    errs = " / ".join(f"{pose[a]['max_abs_error_deg']:g}°" for a in ("pitch", "yaw", "roll"))
    rates = ", ".join(f"{b[k]['measured']} at {k} fps" for k in b)
    figure = (
        f"visual-v2 on planted relief-head sequences: pose ±15° max error pitch/yaw/roll **{errs}**; "
        f"blinks planted {b['10']['planted']}: {rates}; r smile→AU12 **{r['smile→AU12']:.2f}**, "
        f"jaw→AU25 **{r['jaw→AU25']:.2f}**, jaw→AU26 **{r['jaw→AU26']:.2f}**; "
        f"tracker {doc['tracker_ms_per_frame']:g} ms/frame"
    )
    target = "pose ≤ 3°, blinks ±1/min (10 fps), r ≥ 0.8"
    return [Row("visual_validation", figure, target, all(doc["met"].values()))]


def stream_rss(doc: Doc) -> list[Row]:
    runs = doc["runs"]
    after = runs["after_8b"]
    figure = (
        f"stream-server process, LLaMA-3-8B-shaped bundle ({doc['llm_params']['8b']:,} LLM params): "
        f"vllm-native (LLM a meta shell) RSS **{after['rss_mb']:,} MB** (peak {after['peak_rss_mb']:,}; "
        f"speech-to-text process {after['children_rss_mb']} MB); embedded 8B *estimated* "
        f"{doc['before_8b_rss_mb_estimated']:,} MB (peak {doc['before_8b_peak_rss_mb_estimated']:,})"
    )
    if "before_1b" in runs:
        check = doc["check_1b"]
        figure += (
            f"; measured on a LLaMA-3.2-1B-shaped bundle: embedded {runs['before_1b']['rss_mb']:,} MB (peak "
            f"{runs['before_1b']['peak_rss_mb']:,}) vs vllm-native {runs['after_1b']['rss_mb']:,} MB: "
            f"difference {check['rss_diff_mb']:,} MB vs params × 2 B {check['params_x2_mb']:,} MB"
        )
    return [
        Row("stream_rss", figure, "0 LLM params in the stream server", doc["stream_llm_params_after"] == 0)
    ]


def panel_indicators(doc: Doc) -> list[Row]:
    parts = []
    for key, d in doc["directions"].items():
        lo, hi = (doc["sessions"][n]["indicators"][key] for n in ("low", "high"))
        parts.append(
            f"{key} low {lo['live']:g} (plant {lo['plant']:g}) / high {hi['live']:g} (plant {hi['plant']:g})"
            f"{'' if d['right'] else ' **wrong direction**'}"
        )
    cost = doc["sessions"]["low"]["cost"]
    figure = (
        f"{doc['seconds']:g}-s planted sessions at {doc['analysis_fps']:g} analysed frames/s: "
        + "; ".join(parts)
        + f"; live = replay; eye pass {cost['eye_pass_ms_per_media_min']} ms + luma views of thinned frames "
        f"{cost['thinned_frames_prep_ms_per_media_min']} ms per media minute (mesh "
        f"{cost['mesh_ms_per_media_min']} ms)"
    )
    met = all(doc["met"].values())
    return [Row("panel_indicators", figure, "directions right, |error| ≤ bounds, live = replay ± tol", met)]


def session_cost(doc: Doc) -> list[Row]:
    names = {"before": "v1, no eye pass", "v2": "v2", "after_rgb": "v2 + eye pass (RGB)",
             "after_luma": "v2 + eye pass (luma)"}  # fmt: skip
    parts = []
    for media, r in doc["media"].items():
        cells = ", ".join(
            f"{label} **{r[v]['cpu_s_per_media_min']:g}** ({r[v]['sessions_per_machine']:g})"
            for v, label in names.items()
            if v in r
        )
        parts.append(f"{media}: {cells}")
    figure = (
        f"one session's ingest feature work (demo bundle config, {doc['analysis_fps']:g} analysed frames/s), "
        f"CPU-s per media minute (sessions per {doc['cores']}-core machine, estimate = {doc['cores']} × 60 / "
        "CPU-s; no WebRTC decode, event loop or model): " + "; ".join(parts)
    )
    return [Row("session_cost", figure)]


def live_eye(doc: Doc) -> list[Row]:
    """``live_sessions.py --name live_eye_on|off``: the whole server's CPU per session, eye pass on/off."""
    eye = "off" if doc.get("server_env", {}).get("eye_pass") in ("false", "0") else "on"
    parts = []
    for kind, rows in doc["rows"].items():
        for r in rows:
            per_min = r["server_cpu_pct"] / 100 * 60 / r["n"]
            parts.append(
                f"{kind} N = {r['n']}: server CPU {r['server_cpu_pct']:g} % of one core = **{per_min:.2f}** "
                f"CPU-s per session per media minute (2 × 60 / that ≈ {120 / per_min:.0f} sessions per "
                f"2-core machine, estimate), lag p95 {_num(r['lag_p95_s'])} s, "
                f"{'real time' if r['real_time'] else 'not real time'}"
            )
    return [Row(f"live server, eye pass {eye}", "; ".join(parts))]


def browser_audio(doc: Doc) -> list[Row]:
    summary = doc["summary"]

    def one(mode: str) -> str:
        f = summary[mode]
        return (
            f"{mode} WER **{f['wer_mean']:.2f}**, F0 {f['f0_mean_hz']} Hz, F0 SD {f['f0_sd_semitones']} st, "
            f"energy SD {f['energy_sd_db']} dB, speech ratio {f['speech_ratio']}"
        )

    replay = doc.get("replay")
    offline = f"; replay of the file (no network) WER **{replay['wer']:.2f}**" if replay else ""
    figure = (
        f"same {doc['audio_s']} s patient file ({doc['reference_words']} words), "
        f"{doc['runs_per_mode']} sessions per mode, fresh server each: "
        + "; ".join(map(one, summary))
        + offline
    )
    met = summary["browser_speech"]["wer_mean"] <= summary["python_sdk"]["wer_mean"]
    return [Row("browser_audio", figure, "browser WER ≤ Python SDK WER", met)]


def prompt_coverage(doc: Doc) -> list[Row]:
    s, t = doc["summary"], doc["targets"]
    names = {"captions": "captions", "two_track": "two-track STT", "patient_only": "patient-only STT"}
    parts = []
    for mode, label in names.items():
        m = s[mode]
        q = "–" if m["question_share"] is None else f"{m['question_share']:.0%}"
        wer = "–" if m["wer"] is None else f"{m['wer']:.2f}"
        parts.append(
            f"{label}: coverage **{m['transcript_coverage']:.3f}** (min {m['transcript_coverage_min']:.3f}), "
            f"{m['pairs_per_item']:g} pairs/item, question on {q} of pairs, WER {wer}"
        )
    figure = (
        f"{doc['sessions']} synthetic session(s) of {doc['minutes']:g} min, "
        f"{doc['budget_tokens']}-token budget ({doc['bundle']}): " + "; ".join(parts)
    )
    c = t["coverage"]
    target = (
        f"coverage ≥ {c['captions']:g} / {c['two_track']:g} / {c['patient_only']:g}; question ≥ "
        f"{t['question_share_two_track']:.0%} (two-track)"
    )
    return [Row("prompt_coverage", figure, target, all(doc["met"].values()))]


def stt_agreement(doc: Doc) -> list[Row]:
    p = doc["paths"]
    parts = [
        f"{name}: WER vs replay **{p[name]['wer_vs_replay']:.3f}**, items equal {p[name]['items_equal']}/8, "
        f"total {p[name]['scores']['total']}"
        for name in ("live", "replay_loop", "replay_again")
    ]
    figure = (
        f"{doc['audio_s']:g}-s synthetic patient recording, pocketsphinx, replay total "
        f"{p['replay']['scores']['total']} (WER vs planted {p['replay']['wer_vs_planted']:.2f}); "
        + "; ".join(parts)
    )
    return [Row("stt_agreement", figure, "same transcript and scores")]


BENCHMARKS: dict[str, Callable[[Doc], list[Row]]] = {
    "live_sessions": live_sessions,
    "live_model": live_model,
    "live_model_thread": live_model,
    "hangup_latency": hangup_latency,
    "long_session": long_session,
    "replay": replay,
    "encoder_streaming": encoder_streaming,
    "transcribe_wer": transcribe_wer,
    "browser_audio": browser_audio,
    "gpu_check": gpu_check,
    "gpu_vllm": gpu_vllm,
    "vllm_native_tiny": vllm_native_tiny,
    "visual_validation": visual_validation,
    "stream_rss": stream_rss,
    "panel_indicators": panel_indicators,
    "session_cost": session_cost,
    "live_eye_on": live_eye,
    "live_eye_off": live_eye,
    "prompt_coverage": prompt_coverage,
    "stt_agreement": stt_agreement,
}


def table(results: Path = RESULTS) -> str:
    """The markdown table of every benchmark that has a current result file."""
    lines = [HEADER]
    for name, rows in BENCHMARKS.items():
        path = results / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        for row in rows(doc):
            src = row.source or doc
            mark = "–" if row.met is None else ("yes" if row.met else "**no**")
            lines.append(
                f"| {row.label} | {row.figures} | {row.target} | {mark} | {_machine(src)} | {_load(src)} "
                f"| {_date(src.get('date_utc'))} | `{src.get('command', '')}` |"
            )
    return "\n".join(lines)


def replace_table(text: str, new_table: str) -> str:
    """``text`` with the part between the markers replaced by ``new_table``."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{DOC}: markers {BEGIN!r} … {END!r} not found")
    return f"{head}{BEGIN}\n{new_table}\n{END}{tail}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"replace the generated table in {DOC.name}")
    args = p.parse_args()
    new = table()
    if args.write:
        DOC.write_text(replace_table(DOC.read_text(), new))
        print(f"wrote the table into {DOC}")
    else:
        print(new)


if __name__ == "__main__":
    main()
