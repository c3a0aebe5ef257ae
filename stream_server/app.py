"""The ASGI app (FastAPI): the app, its routers, its lifespan (start-up and shutdown).

Read it like aiortc's ``examples/server/server.py``. Routes live in ``routes/`` (``sessions``: REST and
SDP offer/answer; ``events``: the WebSocket; ``ops``: health, metrics, pages); what they share in
``server.py``; a session's parts in ``session.py`` and ``live/``; storage in ``store.py``; fan-out in
``bus.py`` / ``fanout.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stream_server.engine import Engine
from stream_server.fanout import start_bus, stop_bus
from stream_server.http_errors import install_error_handlers
from stream_server.http_security import HttpSecurity, http_security_options
from stream_server.json_limits import quiet_invalid_utf8_logs
from stream_server.middleware import BodyLimitMiddleware
from stream_server.protocol import MAX_HTTP_BODY_BYTES
from stream_server.routes import events, ops, sessions
from stream_server.server import Server
from stream_server.settings import Settings


def limit_ice_host_addresses(addresses: list[str]) -> None:
    """Make aioice gather host candidates only on ``addresses`` (loopback-only hosts, tests)."""
    import aioice.ice

    fixed = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(fixed)


async def startup(srv: Server) -> None:
    await srv.store.init()
    await start_bus(srv.bus)
    await srv.pending.resume_all()  # final assessments the LLM backend owed before a restart
    srv.ready = True


async def shutdown(srv: Server) -> None:
    """Sessions stop (they resume on the next offer), pending retries release their claims, then the rest."""
    srv.ready = False
    await srv.manager.close()
    await srv.pending.close()
    srv.services.close()
    await stop_bus(srv.bus)
    await srv.store.close()


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """The ASGI app for ``settings`` serving the already-loaded ``engine``."""
    settings = settings.ensure_secrets()
    if settings.ice_host_addresses:
        limit_ice_host_addresses(settings.ice_host_addresses)
    srv = Server(settings, engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await startup(srv)
        try:
            yield
        finally:
            await shutdown(srv)

    app = FastAPI(title="mllmdr-server", version="1", lifespan=lifespan)
    app.state.server = srv
    app.add_middleware(BodyLimitMiddleware, limit=MAX_HTTP_BODY_BYTES)
    app.add_middleware(HttpSecurity, **http_security_options(settings))  # outermost: headers, Origin, 431
    quiet_invalid_utf8_logs()  # uvicorn's traceback per non-UTF-8 WebSocket frame → one line
    install_error_handlers(app, srv.metrics)
    app.include_router(sessions.router)
    app.include_router(events.router)
    app.include_router(ops.router)
    ops.mount_pages(app)
    return app
