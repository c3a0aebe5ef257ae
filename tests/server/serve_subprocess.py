"""A test server in its own process (kill -9 tests): ``python serve_subprocess.py PORT DB_URL BUNDLE``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream_server.app import create_app
from stream_server.engine import CoreEngine
from stream_server.settings import Settings


def main() -> None:
    port, db = int(sys.argv[1]), sys.argv[2]
    engine = CoreEngine(sys.argv[3])
    settings = Settings(
        api_key="test-api-key-0123456789",
        jwt_secret="s" * 32,
        database_url=db,
        port=port,
        indicator_interval_s=0.5,
        indicator_window_s=5.0,
        ice_host_addresses=["127.0.0.1"],
        reconnect_grace_s=30.0,
    )
    config = uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
