"""Checks on an SDP offer before aiortc sees it (aiortc's parser skips lines it cannot read).

Each rule raises a ``bad_sdp`` ``ProtocolError`` whose message starts with the rule's name:

- ``version``: the first line is ``v=0``;
- ``syntax``: every other line is ``<letter>=<value>`` (RFC 8866 §5; blank lines are skipped);
- ``fingerprint``: every media section has at least one usable DTLS fingerprint (its own or a
  session-level one): ``sha-256``/``sha-384``/``sha-512`` with the right number of hex pairs;
- ``ice-ufrag`` / ``ice-pwd``: every media section has them (its own or session-level), 4–256 and
  22–256 ``ice-char``s (RFC 8839 §5.4);
- ``port``: ``m=`` and ``a=rtcp:`` ports are integers 0–65535;
- ``candidate``: ``a=candidate:`` lines follow RFC 8839 §5.1 (foundation, component, transport,
  priority < 2³², address, port, ``typ`` type; ``rport`` in range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mllmdr_core.errors import ProtocolError
from stream_server.protocol import protocol_error

FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}  # usable hashes and their sizes
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_LINE = re.compile(r"[a-z]=")
ICE_UFRAG_CHARS = (4, 256)
ICE_PWD_CHARS = (22, 256)


@dataclass
class _Section:
    """Attributes of the session part (``media is None``) or of one ``m=`` section."""

    media: str | None
    fingerprints: list[str] = field(default_factory=list)
    ufrag: str | None = None
    pwd: str | None = None


def _fail(rule: str, detail: str) -> ProtocolError:
    return protocol_error("bad_sdp", f"{rule}: {detail}")


def _port(value: str) -> bool:
    return value.isdigit() and len(value) <= 5 and int(value) <= 65535


def usable_fingerprint(value: str) -> bool:
    """``value`` (after ``a=fingerprint:``) is ``sha-256``-or-stronger with the right hex pairs."""
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() not in FINGERPRINT_BYTES:
        return False
    digest = parts[1]
    return (
        _HEX_PAIRS.fullmatch(digest) is not None
        and len(digest) == 3 * FINGERPRINT_BYTES[parts[0].lower()] - 1
    )


def _check_candidate(value: str) -> None:
    """``value`` is what follows ``a=candidate:``."""
    parts = value.split()
    if len(parts) < 8 or len(parts) % 2 != 0:
        raise _fail(
            "candidate",
            f"expected 'foundation component transport priority address port typ type "
            f"[name value]...', got {value[:80]!r}",
        )
    foundation, component, transport, priority, address, port, typ, kind = parts[:8]
    if not (_ICE_CHARS.fullmatch(foundation) and len(foundation) <= 32):
        raise _fail("candidate", f"bad foundation {foundation[:40]!r}")
    if not (component.isdigit() and 1 <= int(component) <= 256 and len(component) <= 3):
        raise _fail("candidate", f"component {component[:12]!r} not in 1-256")
    if not _TOKEN.fullmatch(transport):
        raise _fail("candidate", f"bad transport {transport[:40]!r}")
    if not (_DIGITS.fullmatch(priority) and int(priority) < 2**32):
        raise _fail("candidate", f"priority {priority[:12]!r} not in 0-4294967295")
    if not address or len(address) > 253:
        raise _fail("candidate", "bad connection address")
    if not _port(port):
        raise _fail("candidate", f"port {port[:12]!r} not in 0-65535")
    if typ != "typ" or not _TOKEN.fullmatch(kind):
        raise _fail("candidate", f"expected 'typ <type>', got {typ[:12]!r} {kind[:12]!r}")
    extensions = parts[8:]
    for name, ext in zip(extensions[::2], extensions[1::2], strict=True):
        if name == "rport" and not _port(ext):
            raise _fail("candidate", f"rport {ext[:12]!r} not in 0-65535")


def _check_media_line(value: str) -> str:
    """``value`` follows ``m=``; returns the media kind."""
    parts = value.split()
    if len(parts) < 4 or not _TOKEN.fullmatch(parts[0]):
        raise _fail("port", f"m= line must be 'media port proto fmt...', got {value[:80]!r}")
    port = parts[1].split("/", 1)[0]
    if not _port(port):
        raise _fail("port", f"m={parts[0]} port {parts[1][:12]!r} not in 0-65535")
    return parts[0]


def _sections(sdp: str) -> list[_Section]:
    lines = [ln.rstrip("\r") for ln in sdp.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise _fail("version", f"first line must be 'v=0', got {(lines[0] if lines else '')[:40]!r}")
    sections = [_Section(media=None)]
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        if not _LINE.match(line):
            raise _fail("syntax", f"line {number} is not '<letter>=<value>': {line[:40]!r}")
        current = sections[-1]
        if line.startswith("m="):
            sections.append(_Section(media=_check_media_line(line[2:])))
        elif line.startswith("a=fingerprint:"):
            current.fingerprints.append(line[len("a=fingerprint:") :])
        elif line.startswith("a=ice-ufrag:"):
            current.ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=ice-pwd:"):
            current.pwd = line[len("a=ice-pwd:") :]
        elif line.startswith("a=candidate:"):
            _check_candidate(line[len("a=candidate:") :])
        elif line.startswith("a=rtcp:"):
            port = line[len("a=rtcp:") :].split(" ", 1)[0]
            if not _port(port):
                raise _fail("port", f"a=rtcp port {port[:12]!r} not in 0-65535")
    return sections


def _check_ice(rule: str, value: str | None, bounds: tuple[int, int], where: str) -> None:
    low, high = bounds
    if value is None:
        raise _fail(rule, f"{where} has no a={rule} (nor has the session)")
    if not (low <= len(value) <= high and _ICE_CHARS.fullmatch(value)):
        raise _fail(
            rule,
            f"{where}: a={rule} must be {low}-{high} characters of [A-Za-z0-9+/], "
            f"got {len(value)} characters",
        )


def check_offer_sdp(sdp: str) -> None:
    """Raise ``bad_sdp`` naming the first rule ``sdp`` breaks (see the module docstring)."""
    session, *media = _sections(sdp)
    session_ok = any(usable_fingerprint(f) for f in session.fingerprints)
    for index, section in enumerate(media):
        where = f"media section {index} ({section.media})"
        if not session_ok and not any(usable_fingerprint(f) for f in section.fingerprints):
            raise _fail(
                "fingerprint", f"{where} has no usable a=fingerprint (sha-256 or stronger, hex pairs)"
            )
        _check_ice(
            "ice-ufrag", section.ufrag if section.ufrag is not None else session.ufrag, ICE_UFRAG_CHARS, where
        )
        _check_ice("ice-pwd", section.pwd if section.pwd is not None else session.pwd, ICE_PWD_CHARS, where)
