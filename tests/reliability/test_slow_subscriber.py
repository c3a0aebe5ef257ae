"""A subscriber that stops reading is closed with 1013 (``WsClose.TRY_AGAIN_LATER``), and the close code
reaches it once it reads on; its session and the session's other subscribers carry on (issue 21)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from server.conftest import RunningServer, run_server
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from stream_server.protocol import WsClose

from .conftest import healthy, make_settings
from .test_faults import _sample

TEXT = "x" * 3900
CAPTIONS = 1300


async def _slow_closes(srv: RunningServer, cause: str = "send_timeout") -> float:
    return _sample((await srv.http.get("/metrics")).text, f'mllmdr_slow_subscribers_total{{cause="{cause}"}}')


class PausedClient:
    """A real WebSocket client (the ``websockets`` protocol over our own asyncio stream) that reads
    nothing after its handshake until ``read_all``: with a 4 KiB socket receive buffer and an 8 KiB
    stream buffer, the server's writes back up after a few kilobytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, uri: str) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = ClientProtocol(parse_uri(uri), max_size=None)
        self.events: list[Any] = []  # received, not yet taken

    @classmethod
    async def open(cls, srv: RunningServer, path: str) -> PausedClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.settings.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        client = cls(reader, writer, f"ws://127.0.0.1:{srv.settings.port}{path}")
        client.protocol.send_request(client.protocol.connect())
        while not client.events:
            await client._exchange()
        response = client.events.pop(0)
        assert isinstance(response, Response) and response.status_code == 101, response
        return client

    async def _exchange(self) -> None:
        """Send what the protocol has to send, then read once and parse."""
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
        await self.writer.drain()
        data = await asyncio.wait_for(self.reader.read(65536), 10)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.events += self.protocol.events_received()

    async def read_all(self) -> list[dict[str, Any]]:
        """Every text message until the server's close frame (or the end of the stream)."""
        while self.protocol.close_rcvd is None and not self.reader.at_eof():
            await self._exchange()
        self.writer.close()
        frames = [e for e in self.events if isinstance(e, Frame) and e.opcode == Opcode.TEXT]
        return [json.loads(f.data) for f in frames]


async def test_slow_subscriber_gets_1013_and_the_session_carries_on(tmp_path: Path, engine: Any) -> None:
    settings = make_settings(tmp_path, ws_send_timeout_s=3.0, caption_burst=5000, caption_per_s=1000.0)
    async with run_server(settings, engine) as srv:
        s = await srv.create_session()
        sid, token = s["session_id"], s["clinician_token"]
        fast = await srv.events(sid, token)
        slow = await PausedClient.open(srv, f"/v1/sessions/{sid}/events?token={token}")
        sent = 0
        deadline = time.monotonic() + 60
        while await _slow_closes(srv) == 0:  # captions (about 8 KB of events each) until the server gives up
            assert time.monotonic() < deadline, f"{sent} captions sent, the slow subscriber never closed"
            for _ in range(20):
                r = await srv.http.post(
                    f"/v1/sessions/{sid}/captions",
                    json={"text": TEXT, "start_s": float(sent), "end_s": sent + 0.5},
                    headers=srv.bearer(s["publisher_token"]),
                )
                assert r.status_code == 200, r.text
                sent += 1
        given_up = time.monotonic()
        await asyncio.sleep(1.5)  # the client reads on later, within ws_send_timeout_s of the 1013
        # the slow client reads on: what it was sent, in order, then the close frame with 1013
        got = await slow.read_all()
        closed = slow.protocol.close_rcvd
        print(
            f"slow subscriber: closed after {sent} captions; it had read {len(got)} events; "
            f"close {closed.code if closed else None} {time.monotonic() - given_up:.1f} s after"
        )
        assert closed is not None and closed.code == WsClose.TRY_AGAIN_LATER == 1013
        assert "too slow" in closed.reason
        seqs = [e["seq"] for e in got]
        assert got[0]["type"] == "session.created" and len(got) < 2 * sent  # from the start; fell behind
        # the session and its fast subscriber are unaffected: every event, no close
        await fast.wait("transcript.ack", sent, timeout=60)
        assert seqs == [e["seq"] for e in fast.items[: len(got)]]  # what it got: in order, no gap
        assert not fast.closed.is_set()
        info = (await srv.http.get(f"/v1/sessions/{sid}", headers=srv.api())).json()
        assert info["state"] == "created"
        # resuming with after_seq = the last seq seen gives the rest, in order, nothing twice
        rest = [e["seq"] for e in fast.items if e["seq"] > seqs[-1]]
        again = await srv.events(sid, token, after_seq=seqs[-1])
        await again.wait("transcript.ack", len([e for e in fast.of("transcript.ack") if e["seq"] > seqs[-1]]))
        assert [e["seq"] for e in again.items] == rest
        await again.close()
        await fast.close()
        await healthy(srv)


async def test_a_resuming_subscriber_that_does_not_read_its_history_gets_1013(
    tmp_path: Path, engine: Any
) -> None:
    settings = make_settings(tmp_path, ws_send_timeout_s=2.0, caption_burst=5000, caption_per_s=1000.0)
    async with run_server(settings, engine) as srv:
        s = await srv.create_session()
        sid, token = s["session_id"], s["clinician_token"]
        # ~10 MB of stored history (two ~3.9-KB events per caption): more than the socket buffers on
        # both sides hold (the live test above needed 760–1160 captions before sends blocked)
        for first in range(0, CAPTIONS, 20):
            replies = await asyncio.gather(*(
                srv.http.post(
                    f"/v1/sessions/{sid}/captions",
                    json={"text": TEXT, "start_s": float(n), "end_s": n + 0.5},
                    headers=srv.bearer(s["publisher_token"]),
                )
                for n in range(first, first + 20)
            ))  # fmt: skip
            assert all(r.status_code == 200 for r in replies), replies[0].text
        slow = await PausedClient.open(srv, f"/v1/sessions/{sid}/events?token={token}&after_seq=0")
        deadline = time.monotonic() + 30
        while await _slow_closes(srv, "history_timeout") == 0:  # the history send is bounded too
            assert time.monotonic() < deadline, "the server waited on the history without a limit"
            await asyncio.sleep(0.2)
        got = await slow.read_all()
        closed = slow.protocol.close_rcvd
        assert closed is not None and closed.code == WsClose.TRY_AGAIN_LATER
        seqs = [e["seq"] for e in got]
        assert got[0]["type"] == "session.created" and seqs == sorted(seqs) and len(got) < 2 * CAPTIONS
        # it resumes where it stopped and gets the rest of the history, nothing twice
        again = await srv.events(sid, token, after_seq=seqs[-1])
        acked = sum(e["type"] == "transcript.ack" for e in got)
        await again.wait("transcript.ack", CAPTIONS - acked, timeout=30)
        assert again.items[0]["seq"] == seqs[-1] + 1
        await again.close()
        await healthy(srv)
