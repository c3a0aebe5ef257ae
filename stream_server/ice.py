"""STUN/TURN servers for WebRTC: one configured list for the server's peer connections and its clients.

``MLLMDR_ICE_SERVERS`` is a JSON list of ``RTCIceServer`` dictionaries (``{"urls": [...], "username": ...,
"credential": ...}``). With ``MLLMDR_TURN_SECRET`` set (coturn ``use-auth-secret`` /
``static-auth-secret``), TURN entries without a username get short-lived credentials per session, the
TURN REST scheme coturn checks: ``username = "<expiry unix time>:<session id>"``,
``credential = base64(HMAC-SHA1(secret, username))``; coturn refuses them after the expiry, so a leaked
credential is worth one session for ``turn_ttl_s`` seconds. The same list (with fresh credentials) goes
into the server's ``RTCPeerConnection`` and to clients (``POST /v1/sessions``, ``GET …/ice-servers``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from stream_server.protocol import IceServer

if TYPE_CHECKING:
    from stream_server.settings import Settings


def turn_rest_credentials(
    secret: str, session_id: str, ttl_s: float, *, now: float | None = None
) -> tuple[str, str]:
    """coturn ``use-auth-secret`` credentials valid for ``ttl_s`` seconds: ``(username, credential)``."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(settings: Settings, session_id: str, *, now: float | None = None) -> list[IceServer]:
    """The configured ICE servers for one session: TURN entries without credentials get minted ones."""
    out: list[IceServer] = []
    for server in settings.ice_servers:
        if server.is_turn and server.username is None and settings.turn_secret:
            username, credential = turn_rest_credentials(
                settings.turn_secret, session_id, settings.turn_ttl_s, now=now
            )
            server = server.model_copy(update={"username": username, "credential": credential})
        out.append(server)
    return out


def credentials_expire_at(settings: Settings, *, now: float | None = None) -> float | None:
    """When credentials minted now expire (None when nothing is minted)."""
    minted = settings.turn_secret and any(s.is_turn and s.username is None for s in settings.ice_servers)
    return float(int((time.time() if now is None else now) + settings.turn_ttl_s)) if minted else None
