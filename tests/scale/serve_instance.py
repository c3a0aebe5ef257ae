"""One stream server instance in its own process: ``python serve_instance.py PORT DATABASE_URL BUNDLE``.

Every instance shares the API key and JWT secret (as a deployment must), so a token issued by one
instance is accepted by the other.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream_server.app import create_app
from stream_server.engine import CoreEngine
from stream_server.settings import Settings

API_KEY = "scale-test-api-key-0123456789"


def main() -> None:
    port, db, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    settings = Settings(
        api_key=API_KEY,
        jwt_secret="j" * 32,
        database_url=db,
        port=port,
        indicator_interval_s=0.5,
        indicator_window_s=5.0,
        ice_host_addresses=["127.0.0.1"],
        reconnect_grace_s=30.0,
        workers=2,
    )
    app = create_app(settings, CoreEngine(bundle))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
