"""A Python-SDK publisher in its own process (kill -9 tests):
``python sdk_publisher_process.py BASE SESSION_ID PUBLISHER_TOKEN FILE loop|to_end``.

``loop`` publishes the file over and over and prints ``publishing``; ``to_end`` sends it once, prints
``ended`` when it has been sent to its end, and leaves the peer connection open. Either way it then
waits to be killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client_sdk.session import Session


async def main(base: str, session_id: str, token: str, path: str, mode: str) -> None:
    session = await Session.attach(base, session_id, token)
    await session.publish_file(path, loop=mode == "loop")
    if mode == "to_end":
        await session.wait_media_ended(timeout_s=60)
        print("ended", flush=True)
    else:
        print("publishing", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
