// Types of the MLlm-DR Live browser SDK (client_sdk/js/mllmdr.js) and of protocol v1 events
// (mirrors stream_server/protocol.py; see docs/protocol.md).

export const PROTOCOL_VERSION: 1;

export class MllmdrError extends Error {
  code: string;
  constructor(code: string, message: string);
}

export type Speaker = "patient" | "clinician" | "unknown";
export type SessionStateName = "created" | "live" | "reconnecting" | "ending" | "pending" | "closed";

interface EventBase { v: 1; session_id: string; seq: number; ts: number; }

export interface Evidence {
  kind: "transcript" | "indicator"; text: string; name?: string | null; value?: number | null;
  start_s?: number | null; end_s?: number | null;
}
export interface ItemAssessment {
  key: string; score: number; generated_score?: number | null; maa_score?: number | null;
  rationale: string; fallback: boolean; raw_text: string; evidence: Evidence[];
}
export interface ModelInfo {
  bundle_id: string; training_data: string; non_clinical: boolean; backend: string;
  transcript_source: string; low_accuracy_transcript: boolean;
}
export interface Assessment {
  schema_version: 1; session_id: string; kind: "checkpoint" | "final"; created_at: number;
  window_start_s: number; window_end_s: number; items: ItemAssessment[]; total: number; binary: boolean;
  maa_total?: number | null; model: ModelInfo; labels: string[]; disclaimer: string;
  timings_ms: Record<string, number>;
}
export interface TranscriptLine {
  start_s: number; end_s: number; speaker: Speaker; text: string; source: string; confidence: number; final: boolean;
}

export interface SessionCreatedEvent extends EventBase {
  type: "session.created"; bundle_id: string; training_data: string; non_clinical: boolean; labels: string[];
  disclaimer: string; indicator_interval_s: number; checkpoint_interval_s: number | null; transcript_source: string;
}
export interface SessionStatusEvent extends EventBase {
  type: "session.status"; state: SessionStateName; publisher_connected: boolean; audio: boolean; video: boolean;
  detail: string;
}
export interface IndicatorsEvent extends EventBase {
  type: "indicators"; media_time_s: number; window_s: number; values: Record<string, number>; lag_s: number | null;
}
export interface TranscriptEvent extends EventBase { type: "transcript"; line: TranscriptLine; }
export interface TranscriptAckEvent extends EventBase {
  type: "transcript.ack"; ref: string | null; line_index: number; start_s: number; end_s: number;
}
export interface CheckpointResultEvent extends EventBase {
  type: "checkpoint.result"; ref: string | null; trigger: "request" | "schedule"; assessment: Assessment;
}
export interface AssessmentResultEvent extends EventBase { type: "assessment.result"; assessment: Assessment; }
export interface WarningEvent extends EventBase {
  type: "warning"; code: string; message: string; detail: Record<string, number | string>;
}
export interface ErrorEvent extends EventBase {
  type: "error"; code: string; message: string; ref: string | null; fatal: boolean;
}
export interface PongEvent extends EventBase { type: "pong"; ref: string | null; }
export interface SessionClosedEvent extends EventBase {
  type: "session.closed"; reason: "ended" | "publisher_gone" | "error" | "server_shutdown";
  final_assessment: boolean; media_time_s: number;
}
/** Local, SDK-generated notifications (no seq). */
export interface SdkEvent { type: "sdk.connected" | "sdk.disconnected" | "sdk.connection" | "sdk.error"; [k: string]: unknown; }

export type ServerEvent =
  | SessionCreatedEvent | SessionStatusEvent | IndicatorsEvent | TranscriptEvent | TranscriptAckEvent
  | CheckpointResultEvent | AssessmentResultEvent | WarningEvent | ErrorEvent | PongEvent | SessionClosedEvent;

/** One STUN/TURN server (`ice_servers` of POST /v1/sessions and GET /v1/sessions/{id}/ice-servers). */
export interface IceServer { urls: string[]; username?: string | null; credential?: string | null; }
export interface IceServersResponse { ice_servers: IceServer[]; expires_at: number | null; }
export interface SessionCreated {
  session_id: string; publisher_token: string; clinician_token: string; expires_at: number;
  patient_url: string; panel_url: string; ice_servers: IceServer[];
}

export interface CaptionInput {
  text: string; speaker?: Speaker; start_s: number; end_s: number; id?: string; final?: boolean;
}

export declare class Session {
  readonly sessionId: string;
  readonly role: "publisher" | "clinician";
  lastSeq: number;
  pc: RTCPeerConnection | null;
  on<T extends ServerEvent["type"]>(type: T, handler: (ev: Extract<ServerEvent, { type: T }>) => void): () => void;
  on(type: "*" | SdkEvent["type"], handler: (ev: ServerEvent | SdkEvent) => void): () => void;
  waitFor<T extends ServerEvent["type"]>(
    type: T, predicate?: (ev: Extract<ServerEvent, { type: T }>) => boolean, timeoutMs?: number,
  ): Promise<Extract<ServerEvent, { type: T }>>;
  publish(stream: MediaStream): Promise<void>;
  sendCaption(caption: CaptionInput): Promise<string | null>;
  requestCheckpoint(): Promise<string>;
  end(): Promise<{ session_id: string; state: SessionStateName; assessment: Assessment | null }>;
  info(): Promise<Record<string, unknown>>;
  /** The STUN/TURN servers the next peer connection uses (connect's `iceServers`, else the server's). */
  iceServers(): Promise<RTCIceServer[]>;
  close(): void;
}

export function tokenClaims(token: string): { sessionId: string; role: "publisher" | "clinician"; exp: number };

export function toRtcIceServers(servers: IceServer[] | null | undefined): RTCIceServer[];

export function connect(options: {
  serverUrl?: string; token: string; sessionId?: string; reconnect?: boolean; WebSocketImpl?: typeof WebSocket;
  /** Use these instead of asking the server (e.g. `ice_servers` from the platform's session creation). */
  iceServers?: IceServer[] | RTCIceServer[];
}): Promise<Session>;
