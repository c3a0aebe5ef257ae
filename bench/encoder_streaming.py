"""Streaming HuBERT encoder figures: windowed-vs-whole cosine and encoder cost per second of audio.

Run: ``.venv/bin/python bench/encoder_streaming.py`` (HuBERT-base-sized random-init config: 768 hidden,
12 layers; fp32 and dynamic int8). Audio: a real espeak-ng recording (speech with pauses), 16 kHz.
Prints the figures and writes ``bench/results/encoder_streaming.json``.

- cosine: per pooled frame (5 Hz) between the streaming encoder (fixed windows with left context)
  and one forward pass over the whole utterance, for several left-context lengths.
- rtf: encoder wall time / audio duration (lower is better; 1/rtf = × real time), all windows
  encoded (no VAD gating), prosody included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

from mllmdr_core.config import AudioEncoderConfig
from mllmdr_core.features.audio import to_mono_16k
from mllmdr_core.features.encoder import StreamingHubertEncoder, build_hubert

TEXT = (
    "Over the last two weeks I have had little interest in doing things. I sleep badly and I feel "
    "tired most of the day. Sometimes I find it hard to concentrate on reading or watching television. "
    "My appetite has been about the same, and I still see my friends at the weekend."
)
SR = 16000


def espeak_audio(seconds: float) -> np.ndarray:
    """Real espeak-ng speech, repeated with 0.8 s pauses up to ``seconds``."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), TEXT], check=True, capture_output=True)
        with wave.open(str(path)) as w:
            sr = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = to_mono_16k(pcm, sr)
    x = np.concatenate([x, np.zeros(int(0.8 * SR), np.float32)])
    reps = int(np.ceil(seconds * SR / len(x)))
    return np.tile(x, reps)[: int(seconds * SR)]


def whole_pooled(model: torch.nn.Module, x: np.ndarray, frames_per_pool: int) -> np.ndarray:
    with torch.inference_mode():
        hs = model(torch.from_numpy(x[None])).last_hidden_state[0]  # (F, H)
    n = hs.shape[0] // frames_per_pool
    return np.asarray(hs[: n * frames_per_pool].reshape(n, frames_per_pool, -1).mean(dim=1).numpy())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cos-seconds", type=float, default=20.0, help="utterance length for the cosine")
    ap.add_argument("--rtf-seconds", type=float, default=10.0, help="audio length for the timing")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs (best is reported)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out", default="bench/results/encoder_streaming.json")
    args = ap.parse_args()

    hubert = {"hidden_size": args.hidden, "num_hidden_layers": args.layers,
              "num_attention_heads": max(args.hidden // 64, 1), "intermediate_size": 4 * args.hidden}
    base = AudioEncoderConfig(hubert=hubert, speech_only=False, prosody=False)
    model = build_hubert(base, seed=0)
    result: dict[str, object] = {
        "config": {"hubert": hubert, "window_s": base.window_s, "pool_hz": base.pool_hz},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
        "machine": platform.machine(), "loadavg_start": os.getloadavg(),
    }

    x = espeak_audio(args.cos_seconds)
    enc = StreamingHubertEncoder(base, model)
    whole = whole_pooled(model, x, enc.frames_per_pool)
    cos_rows = {}
    for ctx in (0.0, 0.5, 1.0, 2.0):
        cfg = AudioEncoderConfig(hubert=hubert, speech_only=False, prosody=False, left_context_s=ctx)
        e = StreamingHubertEncoder(cfg, model)
        streamed = np.concatenate([e.push(x[i : i + 320]) for i in range(0, len(x), 320)] + [e.flush()])
        c = cosines(streamed, whole)
        p5 = float(np.percentile(c, 5))
        cos_rows[str(ctx)] = {"mean": float(c.mean()), "min": float(c.min()), "p5": p5}
        print(f"left_context {ctx:.1f} s: cosine windowed vs whole mean {c.mean():.4f} "
              f"p5 {np.percentile(c, 5):.4f} min {c.min():.4f} ({len(c)} pooled frames)")
    result["cosine_vs_whole"] = cos_rows
    result["cosine_seconds"] = args.cos_seconds

    y = espeak_audio(args.rtf_seconds)
    rtf = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        cfg = AudioEncoderConfig(hubert=hubert, speech_only=False, prosody=True, int8=int8)
        e0 = StreamingHubertEncoder(cfg, model)
        best = float("inf")
        feats = np.zeros(0)
        for _ in range(args.repeats):
            e = StreamingHubertEncoder(cfg, model)
            e._runner = e0._runner  # reuse the quantised copy
            t = time.perf_counter()
            feats = np.concatenate([e.push(y), e.flush()])
            best = min(best, time.perf_counter() - t)
        r = best / args.rtf_seconds
        rtf[name] = {"rtf": r, "x_realtime": 1.0 / r, "frames": len(feats)}
        print(f"{name}: {best:.2f} s for {args.rtf_seconds:.0f} s of audio → RTF {r:.3f} "
              f"({args.rtf_seconds / best:.1f}× real time, {torch.get_num_threads()} threads)")
        if name == "fp32":
            fp32 = feats
        else:
            c = cosines(feats[:, :-4], fp32[:, :-4])
            rtf[name]["cosine_to_fp32"] = float(c.mean())
            print(f"int8 vs fp32 cosine: mean {c.mean():.4f}")
    result["encoder_cost"] = rtf
    result["loadavg_end"] = os.getloadavg()
    result["rtf_seconds"] = args.rtf_seconds
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "bench": "encoder_streaming",
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([".venv/bin/python", *sys.argv]),
    }
    out.write_text(json.dumps({**provenance, **result}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
