// Clinician panel: live indicators, status, transcript, checkpoints and the final assessment.
// All model and transcript text is inserted with textContent (never innerHTML).
import { connect } from "/sdk/mllmdr.js";
import { SeriesPlot } from "./plot.js";

const INDICATORS = {
  speech_ratio: ["Speech ratio", ""], pause_count: ["Pauses", ""], pause_mean_s: ["Mean pause", "s"],
  f0_mean_hz: ["Pitch (F0) mean", "Hz"], f0_sd_semitones: ["Pitch variability", "st"],
  energy_sd_db: ["Energy variability", "dB"], speech_level_db: ["Loudness", "dBFS"],
  speech_level_sd_db: ["Loudness variability", "dB"], expressivity: ["Facial expressivity", ""],
  smile_ratio: ["Smiles", ""], smile_au12_mean: ["Smile intensity (AU12)", "0–5"],
  head_pitch_deg: ["Head pitch (down)", "°"], gaze_down_ratio: ["Gaze down", ""],
  head_motion: ["Head motion", "°/s"], blink_rate_per_min: ["Blink rate", "/min"],
};
const NOT_AVAILABLE = "not available";
const ITEM_TITLES = {
  interest: "Interest", mood: "Mood", sleep: "Sleep", tired: "Energy", appetite: "Appetite",
  failure: "Self-worth", concentration: "Concentration", psychomotor: "Psychomotor",
};

const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
};

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get("token") || params.get("token");
const plots = new Map();
let indicatorCount = 0;

function log(text) {
  const line = el("div", `${new Date().toLocaleTimeString()} ${text}`);
  $("log").prepend(line);
}

function setStatus(state, detail) {
  const s = $("status");
  s.textContent = detail ? `${state} (${detail})` : state;
  s.dataset.state = state;
  s.className = `status-${state}`;
}

function plotFor(key) {
  if (plots.has(key)) return plots.get(key);
  const [title, unit] = INDICATORS[key] || [key, ""];
  const box = el("div", null, "plot");
  box.dataset.indicator = key;
  const name = el("div", null, "name");
  name.append(el("span", unit ? `${title} (${unit})` : title), el("span", "–", "value"));
  const canvas = document.createElement("canvas");
  box.append(name, canvas);
  $("plots").append(box);
  const entry = { plot: new SeriesPlot(canvas), value: name.lastChild };
  plots.set(key, entry);
  return entry;
}

function onIndicators(ev) {
  indicatorCount += 1;
  $("indicator-count").textContent = String(indicatorCount);
  $("media-time").textContent = ev.media_time_s.toFixed(1);
  $("lag").textContent = ev.lag_s == null ? "–" : ev.lag_s.toFixed(2);
  const missing = ev.unavailable || {};
  const keys = Object.keys(INDICATORS).filter((k) => k in ev.values || k in missing).concat(
    Object.keys(ev.values).filter((k) => !(k in INDICATORS) && k !== "t_s" && k !== "window_s"));
  for (const key of keys) {
    const v = ev.values[key];
    const entry = plotFor(key);
    if (key in missing || !Number.isFinite(v)) {
      // a modality that is not there: say so, never a 0 that pretends to be a measurement
      entry.value.textContent = NOT_AVAILABLE;
      entry.value.title = missing[key] || "";
      entry.value.dataset.unavailable = "true";
      continue;
    }
    entry.value.textContent = Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2);
    entry.value.title = "";
    delete entry.value.dataset.unavailable;
    entry.plot.push(ev.media_time_s, v);
  }
}

const UNGROUNDED_LABEL = "not found in what the model saw";

// The rationale as text nodes; the sentences the core's grounding check could not find in the item's
// prompt (item.grounding.ungrounded) are wrapped in a marked span with a label. Never innerHTML.
function rationaleNode(item) {
  const box = el("div", null, "rationale");
  const text = String(item.rationale).split(/\s+/).join(" ").trim();
  const marks = [];
  for (const sentence of (item.grounding && item.grounding.ungrounded) || []) {
    const at = sentence ? text.indexOf(sentence) : -1;
    if (at >= 0) marks.push([at, at + sentence.length]);
  }
  marks.sort((a, b) => a[0] - b[0]);
  let pos = 0;
  for (const [start, end] of marks) {
    if (start < pos) continue;
    if (start > pos) box.append(document.createTextNode(text.slice(pos, start)));
    const span = el("span", text.slice(start, end), "ungrounded");
    span.title = UNGROUNDED_LABEL;
    box.append(span, el("span", ` (${UNGROUNDED_LABEL})`, "ungrounded-label"));
    pos = end;
  }
  if (pos < text.length) box.append(document.createTextNode(text.slice(pos)));
  return box;
}

function fmtTime(s) { return s == null ? "" : `${Number(s).toFixed(1)}s`; }

function renderAssessment(a, container) {
  container.replaceChildren();
  const head = el("div");
  head.append(el("span", `Total ${a.total} / 24`, "total"), el("span", "  "));
  const screen = el("span", a.binary ? "Positive screen (≥ 10)" : "Negative screen (< 10)",
    a.binary ? "screen-pos" : "screen-neg");
  screen.dataset.testid = "screen";
  head.append(screen);
  container.append(head);
  const meta = el("div", `Window ${fmtTime(a.window_start_s)}–${fmtTime(a.window_end_s)} · bundle ${a.model.bundle_id}` +
    ` · trained on ${a.model.training_data} · backend ${a.model.backend}` +
    (a.maa_total != null ? ` · MAA total ${a.maa_total.toFixed(1)}` : "") +
    (a.transcript_coverage != null ? ` · transcript coverage ${(100 * a.transcript_coverage).toFixed(0)} %` : "") +
    (a.grounding_share != null ? ` · grounded ${(100 * a.grounding_share).toFixed(0)} %` : ""));
  meta.className = "evidence";
  container.append(meta);
  for (const label of a.labels || []) container.append(el("div", label, "label-nonclinical"));
  const table = el("table", null, "items");
  const hdr = el("tr");
  hdr.append(el("th", "Item"), el("th", "Score"), el("th", "Rationale and evidence"));
  table.append(hdr);
  for (const item of a.items) {
    const tr = el("tr");
    tr.dataset.item = item.key;
    const score = el("td", `${item.score}${item.fallback ? " (fallback)" : ""}`);
    score.dataset.testid = "item-score";
    const why = el("td");
    why.append(rationaleNode(item));
    for (const ev of item.evidence || []) {
      const when = ev.start_s != null ? ` [${fmtTime(ev.start_s)}–${fmtTime(ev.end_s)}]` : "";
      why.append(el("div", `${ev.kind === "transcript" ? "“" + ev.text + "”" : ev.text}${when}`, "evidence"));
    }
    tr.append(el("td", ITEM_TITLES[item.key] || item.key), score, why);
    table.append(tr);
  }
  container.append(table, el("div", a.disclaimer, "evidence"));
}

function onEvent(ev) {
  switch (ev.type) {
    case "session.created":
      $("bundle-id").textContent = ev.bundle_id;
      $("disclaimer").textContent = ev.disclaimer;
      $("labels").replaceChildren(...ev.labels.map((l) => el("span", l, "label-nonclinical")));
      break;
    case "session.status":
      setStatus(ev.state, ev.detail);
      $("media-kinds").textContent = [ev.audio && "audio", ev.video && "video"].filter(Boolean).join(" + ") || "–";
      break;
    case "indicators": onIndicators(ev); break;
    case "transcript": {
      // a partial line is replaced by the next partial or final line of the same speaker and source
      const key = `${ev.line.speaker}|${ev.line.source}`;
      const open = [...$("transcript").querySelectorAll(".line.partial")].find((n) => n.dataset.key === key);
      const line = el("div", null, ev.line.final ? "line" : "line partial");
      line.dataset.key = key;
      line.dataset.testid = "transcript-line";
      const asr = ev.line.source.startsWith("asr") ? ` [${ev.line.source}]` : "";
      line.append(el("span", `${fmtTime(ev.line.start_s)} ${ev.line.speaker}${asr}:`, "who"), el("span", ev.line.text));
      if (open) open.replaceWith(line); else $("transcript").append(line);
      $("transcript").scrollTop = $("transcript").scrollHeight;
      break;
    }
    case "checkpoint.result": {
      const box = el("div");
      box.dataset.testid = "checkpoint";
      if ($("checkpoints").querySelector("em")) $("checkpoints").replaceChildren();
      $("checkpoints").prepend(box);
      renderAssessment(ev.assessment, box);
      break;
    }
    case "assessment.result":
      renderAssessment(ev.assessment, $("final"));
      $("final").dataset.ready = "1";
      break;
    case "warning": log(`warning ${ev.code}: ${ev.message}`); break;
    case "error": log(`error ${ev.code}: ${ev.message}`); break;
    case "session.closed": setStatus("closed", ev.reason); break;
    case "sdk.disconnected": if ($("status").dataset.state !== "closed") log("event stream disconnected; reconnecting"); break;
    default: break;
  }
}

async function main() {
  if (!token) { setStatus("error", "no token in the URL"); return; }
  const session = await connect({ serverUrl: location.origin, token });
  $("session-id").textContent = session.sessionId;
  session.on("*", onEvent);
  $("checkpoint-btn").addEventListener("click", () => {
    session.requestCheckpoint().then((id) => log(`checkpoint requested (${id})`), (e) => log(String(e)));
  });
  globalThis.mllmdrPanel = session;
}

main().catch((err) => { setStatus("error", String(err.message || err)); });
