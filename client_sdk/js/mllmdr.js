// MLlm-DR Live browser SDK (plain ES module, no dependencies, no build).
//
//   import { connect } from "/sdk/mllmdr.js";
//   const session = await connect({ serverUrl: "http://127.0.0.1:8765", token });
//   session.on("indicators", (ev) => ...);          // or "*" for every event
//   await session.publish(await captureMedia({ video: true }));   // speech-preserving audio constraints
//   session.sendCaption({ text: "How have you slept?", speaker: "clinician", start_s: 3.2, end_s: 4.9 });
//   const { assessment } = await session.end();
//
// Events are the server's protocol v1 objects (see docs/protocol.md). The WebSocket reconnects by itself
// (resuming after the last `seq` seen); a publishing peer connection that fails is re-offered to the same
// session, which the server continues within its reconnect grace period. Each peer connection uses the
// server's STUN/TURN servers (GET /v1/sessions/{id}/ice-servers: fresh TURN credentials), or the
// `iceServers` given to connect() (e.g. `ice_servers` of the platform's POST /v1/sessions response).

export const PROTOCOL_VERSION = 1;

export class MllmdrError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "MllmdrError";
    this.code = code;
  }
}

/** The session id (`sub`) and role inside a token (no verification: the server verifies). */
export function tokenClaims(token) {
  const part = String(token).split(".")[1] || "";
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  const claims = JSON.parse(json);
  return { sessionId: claims.sub, role: claims.role, exp: claims.exp };
}

/** Audio capture constraints that keep speech and prosody intact: no echo cancellation, no noise
 * suppression, no automatic gain control (it flattens loudness variability), one channel, 48 kHz,
 * 16-bit. Plain values, i.e. ideal: a platform that cannot honour one still captures, and the track's
 * `getSettings()` (sent with the offer) records what it applied. See docs/sdk.md for the trade-off. */
export const SPEECH_AUDIO_CONSTRAINTS = Object.freeze({
  echoCancellation: false,
  noiseSuppression: false,
  autoGainControl: false,
  channelCount: 1,
  sampleRate: 48000,
  sampleSize: 16,
});

/** `SPEECH_AUDIO_CONSTRAINTS` with `overrides` (e.g. `{ echoCancellation: true }` on a speakerphone). */
export function audioConstraints(overrides = {}) {
  return { ...SPEECH_AUDIO_CONSTRAINTS, ...overrides };
}

/** getUserMedia with the speech-preserving audio constraints by default. `audio`: true (defaults),
 * false (no audio) or constraint overrides; `video`: as for getUserMedia. */
export async function captureMedia({ audio = true, video = false } = {}) {
  const wanted = audio === false ? false : audioConstraints(audio === true ? {} : audio);
  return navigator.mediaDevices.getUserMedia({ audio: wanted, video });
}

/** What capture did to an audio track (its `getSettings()`), in the protocol's `AudioProcessing` shape. */
export function audioProcessing(track) {
  const s = (track && track.getSettings) ? track.getSettings() : {};
  const out = { source: "browser" };
  const names = {
    echoCancellation: "echo_cancellation", noiseSuppression: "noise_suppression",
    autoGainControl: "auto_gain_control", channelCount: "channel_count",
    sampleRate: "sample_rate", sampleSize: "sample_size",
  };
  for (const [key, name] of Object.entries(names)) {
    const v = s[key];
    if (typeof v === "boolean" || (typeof v === "number" && Number.isInteger(v) && v > 0)) out[name] = v;
  }
  return out;
}

/** Connect to one session's event stream. Resolves once the WebSocket is open. */
export async function connect({ serverUrl, token, sessionId, reconnect = true, WebSocketImpl, iceServers } = {}) {
  const base = String(serverUrl || location.origin).replace(/\/$/, "");
  const claims = tokenClaims(token);
  const session = new Session(base, sessionId || claims.sessionId, token, claims.role, {
    reconnect,
    WebSocketImpl: WebSocketImpl || globalThis.WebSocket,
    iceServers: iceServers ? toRtcIceServers(iceServers) : null,
  });
  await session._openSocket();
  return session;
}

export class Session {
  constructor(base, sessionId, token, role, options) {
    this.base = base;
    this.sessionId = sessionId;
    this.token = token;
    this.role = role;
    this.options = options;
    this.lastSeq = 0;
    this.closed = false;
    this.sessionClosed = false;
    this.pc = null;
    this.stream = null;
    this._handlers = new Map();
    this._ws = null;
    this._retry = 0;
    this._msgId = 0;
  }

  /** Subscribe to events of `type` ("indicators", "assessment.result", ... or "*"); returns an unsubscribe fn. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  /** Resolves with the first event of `type` (optionally matching `predicate`). */
  waitFor(type, predicate = () => true, timeoutMs = 0) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const off = this.on(type, (ev) => {
        if (!predicate(ev)) return;
        off();
        if (timer) clearTimeout(timer);
        resolve(ev);
      });
      if (timeoutMs > 0) timer = setTimeout(() => { off(); reject(new MllmdrError("timeout", type)); }, timeoutMs);
    });
  }

  _emit(event) {
    for (const key of [event.type, "*"]) {
      for (const fn of this._handlers.get(key) || []) {
        try { fn(event); } catch (err) { console.error("mllmdr handler failed", err); }
      }
    }
  }

  _wsUrl() {
    const url = new URL(`${this.base}/v1/sessions/${encodeURIComponent(this.sessionId)}/events`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    url.searchParams.set("after_seq", String(this.lastSeq));
    return url.toString();
  }

  _openSocket() {
    return new Promise((resolve, reject) => {
      const ws = new this.options.WebSocketImpl(this._wsUrl());
      this._ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; this._retry = 0; this._emit({ type: "sdk.connected" }); resolve(); };
      ws.onmessage = (msg) => {
        let event;
        try { event = JSON.parse(msg.data); } catch { return; }
        if (event.seq && event.type !== "error" && event.type !== "pong") this.lastSeq = Math.max(this.lastSeq, event.seq);
        if (event.type === "session.closed") this.sessionClosed = true;
        this._emit(event);
      };
      ws.onclose = (ev) => {
        this._emit({ type: "sdk.disconnected", code: ev.code, reason: ev.reason });
        if (!opened) { reject(new MllmdrError("connect_failed", ev.reason || `close ${ev.code}`)); return; }
        const fatal = ev.code >= 4400 && ev.code < 4500;
        if (!this.closed && !this.sessionClosed && !fatal && this.options.reconnect) {
          const delay = Math.min(10000, 250 * 2 ** this._retry++);
          setTimeout(() => { if (!this.closed) this._openSocket().catch(() => {}); }, delay);
        }
      };
    });
  }

  async _http(method, path, body) {
    const res = await fetch(`${this.base}/v1/sessions/${encodeURIComponent(this.sessionId)}${path}`, {
      method,
      headers: { "Authorization": `Bearer ${this.token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new MllmdrError(data?.error?.code || `http_${res.status}`, data?.error?.message || res.statusText);
    return data;
  }

  _send(message) {
    const id = message.id || `m${++this._msgId}`;
    const payload = { ...message, id };
    if (this._ws && this._ws.readyState === 1) {
      this._ws.send(JSON.stringify(payload));
      return id;
    }
    throw new MllmdrError("not_connected", "event socket is not open");
  }

  /** Send a caption line (publisher token). Over the WebSocket when open, else over HTTP. */
  async sendCaption({ text, speaker = "unknown", start_s, end_s, id, final = true }) {
    const msg = { type: "caption", text, speaker, start_s, end_s, final, id };
    if (this._ws && this._ws.readyState === 1) return this._send(msg);
    const ack = await this._http("POST", "/captions", { text, speaker, start_s, end_s, id, final });
    return ack.ref;
  }

  /** Ask for a checkpoint assessment; the result arrives as a `checkpoint.result` event. */
  async requestCheckpoint() {
    return (await this._http("POST", "/checkpoint")).request_id;
  }

  /** End the session; resolves with `{session_id, state, assessment}` once the final assessment is stored. */
  async end() {
    const out = await this._http("POST", "/end");
    this._stopMedia();
    return out;
  }

  info() { return this._http("GET", ""); }

  /** The server's STUN/TURN servers as RTCIceServer dicts (publisher token; fresh TURN credentials). */
  async iceServers() {
    if (this.options.iceServers) return this.options.iceServers;
    return toRtcIceServers((await this._http("GET", "/ice-servers")).ice_servers);
  }

  /** Publish a MediaStream (camera + mic) to the session over WebRTC; each audio track's `getSettings()`
   * goes with the offer (`audio_processing`) and is stored with the session. Two-party capture:
   * `{ interviewer: clinicianStream }` adds the interviewer's audio as a second track, labelled in the
   * offer by its transceiver mid (speech-to-text only on the server; its lines have speaker "clinician"). */
  async publish(stream, options = {}) {
    this.stream = stream;
    this.interviewerStream = options.interviewer || null;
    await this._offer();
  }

  async _offer() {
    if (this.pc) { try { this.pc.close(); } catch { /* already closed */ } }
    const pc = new RTCPeerConnection({ iceServers: await this.iceServers() });
    this.pc = pc;
    for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
    const interviewerSenders = [];
    if (this.interviewerStream) {
      for (const track of this.interviewerStream.getAudioTracks().slice(0, 1)) {
        interviewerSenders.push(pc.addTrack(track, this.interviewerStream));
      }
    }
    pc.onconnectionstatechange = () => {
      this._emit({ type: "sdk.connection", state: pc.connectionState });
      if (pc !== this.pc || this.closed || this.sessionClosed) return;
      if (pc.connectionState === "failed" || pc.connectionState === "disconnected") {
        setTimeout(() => {
          if (pc === this.pc && !this.closed && !this.sessionClosed && pc.connectionState !== "connected") {
            this._offer().catch((err) => this._emit({ type: "sdk.error", message: String(err) }));
          }
        }, 1000);
      }
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitIceComplete(pc);
    const tracks = {};
    for (const t of pc.getTransceivers()) {
      if (interviewerSenders.includes(t.sender) && t.mid !== null) tracks[t.mid] = "interviewer";
    }
    const audio_processing = {};
    const [patientAudio] = this.stream.getAudioTracks();
    if (patientAudio) audio_processing.patient = audioProcessing(patientAudio);
    const [interviewerAudio] = this.interviewerStream ? this.interviewerStream.getAudioTracks() : [];
    if (interviewerAudio) audio_processing.interviewer = audioProcessing(interviewerAudio);
    const answer = await this._http("POST", "/offer", {
      sdp: pc.localDescription.sdp, type: "offer", tracks, audio_processing,
    });
    await pc.setRemoteDescription(answer);
    return pc;
  }

  _stopMedia() {
    if (this.pc) { try { this.pc.close(); } catch { /* ignore */ } this.pc = null; }
  }

  /** Close the event socket and any peer connection (does not end the session). Idempotent. */
  close() {
    this.closed = true;
    this._stopMedia();
    if (this._ws) { try { this._ws.close(1000); } catch { /* ignore */ } }
  }
}

/** Protocol `ice_servers` entries → RTCIceServer dicts (absent username/credential left out). */
export function toRtcIceServers(servers) {
  return (servers || []).map(({ urls, username, credential }) => {
    const out = { urls };
    if (username != null) out.username = username;
    if (credential != null) out.credential = credential;
    return out;
  });
}

function waitIceComplete(pc, timeoutMs = 5000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}
