"""The SDK's HTTP layer against a real loopback socket server that drops keep-alive connections.

The server answers the first request on each TCP connection and closes the connection, unanswered, on the
second: what a client sees when it reuses a pooled connection at the moment the server's keep-alive
timeout closes it (uvicorn: 5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from client_sdk.session import KEEPALIVE_EXPIRY_S, ServerUnavailable, _request, new_http_client

BODY = b'{"ok": true}'


class DroppingServer:
    """Loopback HTTP/1.1 server: one answered request per connection, then a silent close."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/sessions/s_1"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for n in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if n == 1:
                    break  # second request on this connection: closed without an answer
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def dropping_server() -> AsyncIterator[DroppingServer]:
    server = DroppingServer()
    await server.start()
    yield server
    await server.close()


async def test_get_on_a_dropped_keepalive_connection_is_retried(dropping_server: DroppingServer) -> None:
    async with new_http_client() as http:
        first = await _request(http, "GET", dropping_server.url, "token")
        second = await _request(http, "GET", dropping_server.url, "token")  # pooled connection is dropped
    assert first.json() == second.json() == {"ok": True}
    assert dropping_server.connections == 2 and dropping_server.answered == 2


async def test_post_on_a_dropped_connection_is_not_replayed(dropping_server: DroppingServer) -> None:
    async with new_http_client() as http:
        await _request(http, "POST", dropping_server.url, "token", json={"a": 1})
        with pytest.raises(ServerUnavailable) as err:
            await _request(http, "POST", dropping_server.url, "token", json={"a": 2})
    assert "POST" in str(err.value)
    assert dropping_server.connections == 1 and dropping_server.answered == 1  # sent once, never replayed


def test_keepalive_expires_before_uvicorns_timeout() -> None:
    import uvicorn

    assert uvicorn.Config("stream_server.app:create_app").timeout_keep_alive > KEEPALIVE_EXPIRY_S
