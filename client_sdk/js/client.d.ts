// Hand-written declarations of the browser SDK's API (client_sdk/js/mllmdr.js): its functions and classes.
// The wire types (events, messages, REST bodies) are generated into mllmdr.d.ts from
// stream_server/protocol.py; mllmdr.d.ts re-exports this file, so `import ... from "@mllmdr/client"`
// (or "/sdk/mllmdr.js") sees both.

import type {
  AudioProcessingIn,
  CaptionIn,
  ErrorCode,
  IceServer,
  ServerEvent,
  SessionEndResponse,
  SessionInfo,
} from "./mllmdr.js";

export declare const PROTOCOL_VERSION: 1;

export declare class MllmdrError extends Error {
  /** An `ErrorCode` from the server, or an SDK code such as "connect_failed", "not_connected", "http_502". */
  code: ErrorCode | (string & {});
  constructor(code: string, message: string);
}

/** Local, SDK-generated notifications (no seq). */
export interface SdkEvent {
  type: "sdk.connected" | "sdk.disconnected" | "sdk.connection" | "sdk.error";
  [k: string]: unknown;
}

/** A caption line to send (`caption` message over the WebSocket, else `POST /captions`). */
export type CaptionInput = CaptionIn;

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
  /** `interviewer`: the clinician's audio as a second, labelled track (two-party capture). */
  publish(stream: MediaStream, options?: { interviewer?: MediaStream }): Promise<void>;
  sendCaption(caption: CaptionInput): Promise<string | null>;
  requestCheckpoint(): Promise<string>;
  end(): Promise<SessionEndResponse>;
  info(): Promise<SessionInfo>;
  /** The STUN/TURN servers the next peer connection uses (connect's `iceServers`, else the server's). */
  iceServers(): Promise<RTCIceServer[]>;
  close(): void;
}

/** Audio constraints that keep speech and prosody intact (no echo cancellation, noise suppression or
 * automatic gain control; mono; 48 kHz; 16-bit), as ideal values. */
export declare const SPEECH_AUDIO_CONSTRAINTS: Readonly<{
  echoCancellation: false; noiseSuppression: false; autoGainControl: false;
  channelCount: 1; sampleRate: 48000; sampleSize: 16;
}>;

/** `SPEECH_AUDIO_CONSTRAINTS` with `overrides`. */
export declare function audioConstraints(overrides?: MediaTrackConstraints): MediaTrackConstraints;

/** getUserMedia with `SPEECH_AUDIO_CONSTRAINTS` by default (`audio`: true, false or overrides). */
export declare function captureMedia(options?: {
  audio?: boolean | MediaTrackConstraints; video?: boolean | MediaTrackConstraints;
}): Promise<MediaStream>;

/** An audio track's `getSettings()` in the protocol's `AudioProcessing` shape (sent with each offer). */
export declare function audioProcessing(track: MediaStreamTrack): AudioProcessingIn;

export declare function tokenClaims(token: string): { sessionId: string; role: "publisher" | "clinician"; exp: number };

export declare function toRtcIceServers(servers: IceServer[] | null | undefined): RTCIceServer[];

export declare function connect(options: {
  serverUrl?: string; token: string; sessionId?: string; reconnect?: boolean; WebSocketImpl?: typeof WebSocket;
  /** Use these instead of asking the server (e.g. `ice_servers` from the platform's session creation). */
  iceServers?: IceServer[] | RTCIceServer[];
}): Promise<Session>;
