"""Deterministic fuzz corpora: malformed WebSocket client messages and malformed SDP offers.

Every entry must be refused by the server with a typed error (never accepted, never a crash). Generated
from fixed seeds so a failure names a reproducible case.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

# Codes a client may get for a refused WebSocket message (stream_server.protocol.parse_client_message,
# add_caption's own checks and role checks).
WS_ERROR_CODES = frozenset({"bad_json", "unknown_type", "invalid_message", "too_large", "forbidden"})


@dataclass(frozen=True)
class Case:
    family: str  # bad_json | wrong_type | unknown_event | huge | constraint | deep
    raw: str | bytes


_WRONG_VALUES: list[object] = [None, True, 1, -1, 1.5, "x", "", [], {}, [1, 2], {"a": 1}, "🙂" * 3]
_FIELDS = {
    "caption": {"text": "hello", "speaker": "patient", "start_s": 1.0, "end_s": 2.0, "final": True},
    "checkpoint.request": {},
    "session.end": {},
    "ping": {},
}
# values pydantic's lax mode would coerce into a valid field (e.g. "1" -> 1.0): not "wrong" for it
_COERCIBLE = {
    (field, json.dumps(value))
    for field, value in [
        ("start_s", 1),
        ("start_s", 1.5),
        ("start_s", True),
        ("end_s", 1),
        ("end_s", 1.5),
        ("end_s", True),
        ("final", True),
        ("final", 1),
        ("text", "x"),
        ("text", "🙂" * 3),
    ]
}


def ws_corpus(seed: int = 8) -> list[Case]:
    """At least 500 malformed messages, in five families."""
    rng = random.Random(seed)
    cases: list[Case] = []
    # 1. bad JSON: truncations and corruptions of a valid message, non-objects, invalid UTF-8
    valid = json.dumps({"type": "caption", "text": "I have not slept well", "start_s": 1.0, "end_s": 2.0})
    for cut in range(1, len(valid) - 1, 1):
        if len(cases) >= 90:
            break
        cases.append(Case("bad_json", valid[:cut]))
    for _ in range(150):
        chars = list(valid)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            chars[i] = rng.choice(['"', "{", "}", ",", ":", "\\", "\x00", "]", "'"])
        raw = "".join(chars)
        try:
            json.loads(raw)
            continue  # still valid JSON: not this family
        except ValueError:
            cases.append(Case("bad_json", raw))
    for raw in ["null", "1", "[]", '"caption"', "true", "[{}]", "", " ", "\n"]:
        cases.append(Case("bad_json", raw))
    for _ in range(25):
        cases.append(Case("bad_json", bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 64)))))
    # 2. wrong types for every field of every message type
    for kind, fields in _FIELDS.items():
        for name in [*fields, "id"]:
            for value in _WRONG_VALUES:
                if (name, json.dumps(value)) in _COERCIBLE or (
                    name == "id" and (value is None or isinstance(value, str))
                ):
                    continue
                if name == "speaker" and value in ("patient", "clinician", "unknown"):
                    continue
                msg = {"type": kind, **fields, name: value}
                cases.append(Case("wrong_type", json.dumps(msg)))
    for kind in _FIELDS:
        for extra in ("foo", "seq", "token", "__proto__"):
            cases.append(Case("wrong_type", json.dumps({"type": kind, **_FIELDS[kind], extra: 1})))
    # 3. unknown or missing event types
    for kind in [None, 1, "", "CAPTION", "caption ", "indicators", "assessment.result", "admin", "x" * 200]:
        cases.append(Case("unknown_event", json.dumps({"type": kind, "text": "hi"})))
    for i in range(120):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz._-") for _ in range(rng.randint(1, 24)))
        cases.append(Case("unknown_event", json.dumps({"type": word, "n": i})))
    cases.append(Case("unknown_event", json.dumps({"text": "no type at all"})))
    # 4. huge payloads (over the 64 KiB message limit, under the 1 MiB frame limit)
    for size in (65 * 1024, 100_000, 300_000, 900_000):
        caption_msg = {"type": "caption", "text": "a" * size, "start_s": 0, "end_s": 1}
        cases.append(Case("huge", json.dumps(caption_msg)))
        cases.append(Case("huge", "x" * size))
        cases.append(Case("huge", b"\x00" * size))
    cases.append(Case("huge", json.dumps({"type": "ping", "id": "i" * 70_000})))
    cases.append(Case("huge", "[" * 70_000))
    # 5. constraint violations with the right types
    caption = _FIELDS["caption"]
    for bad in (
        {"text": ""},
        {"text": "t" * 4001},
        {"start_s": -1.0},
        {"end_s": -0.001},
        {"start_s": 5.0, "end_s": 1.0},
        {"speaker": "robot"},
        {"speaker": "PATIENT"},
        {"id": "i" * 129},
    ):
        for k in range(4):
            cases.append(Case("constraint", json.dumps({"type": "caption", **caption, "id": f"k{k}", **bad})))
    # 6. (issue 21) captions the schema alone let through, and JSON nested past the 64-level limit
    for bad in (
        {"start_s": 1e308, "end_s": 1e308},
        {"end_s": 90_000.0},
        {"text": "   "},
        {"text": "\u0000"},
        {"text": "a\u001bb"},
    ):
        cases.append(Case("constraint", json.dumps({"type": "caption", **caption, "id": "c21", **bad})))
    for depth in (65, 100, 500, 984, 985, 986, 1000, 2000, 5000, 10_000, 20_000):
        nested = "[" * depth + "]" * depth
        cases.append(Case("deep", '{"type": "caption", "id": "d", "text": ' + nested + "}"))
    return cases


def sdp_corpus(valid: str, seed: int = 8) -> list[str]:
    """At least 100 malformed offers derived from a real aiortc offer ``valid`` (plus some from nothing)."""
    rng = random.Random(seed)
    lines = valid.strip().split("\r\n")
    out: list[str] = ["", "v=0", "garbage", "\x00" * 10, "v=0\r\n" * 50, valid[: len(valid) // 2]]
    # truncations at line boundaries before the first media section is complete
    first_media = next(i for i, ln in enumerate(lines) if ln.startswith("m="))
    for cut in range(1, first_media + 2):
        out.append("\r\n".join(lines[:cut]) + "\r\n")
    # m= lines corrupted: wrong port/proto/format lists
    for i, ln in enumerate(lines):
        if ln.startswith("m="):
            for bad in ("m=audio", "m=video x UDP/TLS/RTP/SAVPF 96", "m=", "m=audio 9 NOPE 0", "m=video -1"):
                out.append("\r\n".join([*lines[:i], bad, *lines[i + 1 :]]) + "\r\n")
    # drop every m= section (only session-level lines left) and keep only data channels
    session_part = lines[:first_media]
    out.append("\r\n".join(session_part) + "\r\n")
    # removed or corrupted security/ICE attributes
    for key in ("a=fingerprint", "a=ice-ufrag", "a=ice-pwd", "a=setup", "a=mid", "a=rtpmap"):
        out.append("\r\n".join(ln for ln in lines if not ln.startswith(key)) + "\r\n")
        out.append(
            "\r\n".join(ln if not ln.startswith(key) else key + ":" + "%" * 5 for ln in lines) + "\r\n"
        )
    weak = "a=fingerprint:md5 00"
    out.append("\r\n".join(ln if not ln.startswith("a=fingerprint") else weak for ln in lines))
    # random line shuffles / deletions / byte noise
    while len(out) < 130:
        mode = rng.randrange(3)
        mutated = list(lines)
        if mode == 0:
            rng.shuffle(mutated)
        elif mode == 1:
            for _ in range(rng.randint(3, 10)):
                j = rng.randrange(len(mutated))
                mutated[j] = "".join(rng.choice("=:/ \t;%@!0123456789") for _ in range(rng.randint(1, 30)))
        else:
            mutated = ["v=0", *["".join(chr(rng.randrange(32, 127)) for _ in range(40)) for _ in range(8)]]
        out.append("\r\n".join(mutated) + "\r\n")
    # (issue 21) offers aiortc answered: each breaks one rule of stream_server/sdp_check.py. Appended
    # last so the indices above (FORMER_OFFER_500 in test_fuzz.py) stay put.
    for old, new in (
        ("v=0", "v=1"),
        ("a=ice-ufrag:", "a=ice-ufrag:a\r\na=x-old-ufrag:"),
        ("a=ice-pwd:", "a=ice-pwd:abcd\r\na=x-old-pwd:"),
        ("a=fingerprint:sha-", "a=fingerprint:sha-9"),  # sha-9256 etc.: unknown hashes
        ("m=audio ", "m=audio 70000"),
        ("m=video ", "m=video 99999"),
        (" typ host", " typ host rport 65536"),
        ("a=candidate:", "a=candidate:x 1 udp 1 1.2.3.4 99999 typ host\r\na=x-old:"),
    ):
        out.append(valid.replace(old, new))
    out.append("\r\n".join(ln for ln in lines[1:] if not ln.startswith("a=fingerprint")) + "\r\n")
    return out
