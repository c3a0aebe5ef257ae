// Patient demo page: publishes camera + mic to the session with the browser SDK.
import { captureMedia, connect } from "/sdk/mllmdr.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get("token") || params.get("token");
let session = null;
let startedAt = 0;

function status(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state || text;
}

async function start() {
  $("start").disabled = true;
  status("requesting camera and microphone…", "starting");
  // speech-preserving audio (no echo cancellation, noise suppression or gain control): this page only
  // publishes, it plays nothing back, so there is no echo to cancel
  const stream = await captureMedia({ video: { width: 640, height: 480, frameRate: 15 } });
  $("preview").srcObject = stream;
  session.on("sdk.connection", (ev) => status(`connection ${ev.state}`, ev.state));
  session.on("session.closed", (ev) => { status(`session closed (${ev.reason})`, "closed"); $("end").disabled = true; });
  await session.publish(stream);
  startedAt = performance.now();
  $("end").disabled = false;
}

async function sendCaption() {
  const text = $("caption").value.trim();
  if (!text || !session) return;
  const t = (performance.now() - startedAt) / 1000;
  await session.sendCaption({ text, speaker: $("speaker").value, start_s: Math.max(0, t - 2), end_s: t });
  $("caption").value = "";
}

async function main() {
  if (!token) { status("no token in the URL", "error"); return; }
  session = await connect({ serverUrl: location.origin, token });
  session.on("transcript.ack", (ev) => { $("acks").textContent = `caption ${ev.line_index + 1} stored`; });
  session.on("error", (ev) => status(`error ${ev.code}: ${ev.message}`, "error"));
  $("start").addEventListener("click", () => start().catch((e) => { status(String(e), "error"); $("start").disabled = false; }));
  $("send").addEventListener("click", () => sendCaption().catch((e) => status(String(e), "error")));
  $("end").addEventListener("click", async () => {
    $("end").disabled = true;
    status("ending: computing the final assessment…", "ending");
    await session.end();
  });
  globalThis.mllmdrPatient = session;
  if (params.get("autostart") === "1") await start();
}

main().catch((err) => status(String(err.message || err), "error"));
