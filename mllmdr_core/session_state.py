"""SessionState: one session's streaming feature state — the single code path for live and replay.

The server (live) and ``client_sdk.replay`` (offline) both push decoded frames here, so a replayed
recording and the live call produce the same features. Pure and synchronous: the server calls these
methods from a worker thread, never on the event loop.

Contract (implemented by the core features work, issue 3):

- ``push_audio(samples, sample_rate, t_s)``: any rate/layout/dtype, ``samples`` shaped (N,) mono or
  (N, C) / interleaved per ``channels``; converted to 16 kHz mono float → VAD → streaming encoder
  (speech only, per config) → pooled audio frames in the FeatureBuffer; prosody for indicators.
  ``t_s`` is the session-relative time of the first sample (None: continue after the last chunk).
- ``push_video(rgb, t_s)``: (H, W, 3) uint8 RGB; sampled down to ``visual.analysis_fps``; face tracker
  → visual vector → pooled visual frames in the FeatureBuffer.
- ``add_transcript(line)``: captions or ASR output.
- ``indicators(window_s)``: live indicators over the last ``window_s`` seconds.
- ``features(start_s, end_s)``: (audio (Ta, D_audio), visual (Tv, D_visual)) float32 for a window.
- ``close()``: idempotent; releases spill files.
"""

from __future__ import annotations
