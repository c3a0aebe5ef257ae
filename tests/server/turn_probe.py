"""A TURN server front door on loopback TCP that checks coturn ``use-auth-secret`` credentials, then refuses.

It answers an unauthenticated ``Allocate`` with 401 (realm + nonce), as coturn does; the retried
``Allocate`` must carry ``USERNAME = "<expiry>:<session>"`` and a ``MESSAGE-INTEGRITY`` made with the
long-term key ``MD5(username:realm:base64(HMAC-SHA1(secret, username)))``. Every such attempt is
recorded, then answered 403 (signed), so clients give up on the relay at once and connect directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from aioice import stun

REALM = "mllmdr.test"


@dataclass
class Attempt:
    username: str
    integrity_ok: bool
    software: str


@dataclass
class TurnProbe:
    secret: str
    port: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=tcp"

    async def __aenter__(self) -> TurnProbe:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(20)
                length = struct.unpack("!H", header[2:4])[0]
                request = stun.parse_message(header + await reader.readexactly(length))
                writer.write(bytes(self._answer(request)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, request: stun.Message) -> stun.Message:
        reply = stun.Message(request.message_method, stun.Class.ERROR, request.transaction_id)
        username = request.attributes.get("USERNAME")
        if username is None:
            reply.attributes.update({"ERROR-CODE": (401, "Unauthorized"), "REALM": REALM, "NONCE": b"n0nce"})
            return reply
        password = base64.b64encode(hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest())
        key = hashlib.md5(f"{username}:{REALM}:{password.decode()}".encode()).digest()
        software = str(request.attributes.get("SOFTWARE", ""))
        self.attempts.append(Attempt(username, request.check_message_integrity(key), software))
        reply.attributes["ERROR-CODE"] = (403, "Forbidden")
        reply.add_message_integrity(key)
        return reply
