"""``mllmdr-server``: run the live server. ``--demo`` = embedded defaults, SQLite in ./var, demo bundle,
one session created at start-up with its patient and clinician URLs printed."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mllmdr_core.errors import MllmdrError
from mllmdr_core.openmp import passive_openmp
from stream_server.demo_secrets import with_demo_secrets
from stream_server.settings import Settings

if TYPE_CHECKING:
    import uvicorn

# The model, torch and web stack are imported inside the functions: the speech-to-text worker process
# (spawned, stream_server/asr.py) re-imports the entry script, and should stay light.

log = logging.getLogger("stream_server")
DEMO_BUNDLE = Path("bundles/demo")
WS_MAX_BYTES = (
    1024 * 1024
)  # frames above this are refused by uvicorn (1009); above 64 KiB we answer too_large


def resolve_bundle(settings: Settings) -> Path:
    """The configured bundle; in demo mode ``bundles/demo/`` or else a tiny random bundle in ``var/``."""
    from mllmdr_core.bundle import is_bundle

    if settings.bundle_path:
        return Path(settings.bundle_path)
    if is_bundle(DEMO_BUNDLE):
        return DEMO_BUNDLE
    if not settings.demo:
        raise MllmdrError("no model bundle: pass --bundle PATH or set MLLMDR_BUNDLE_PATH (or use --demo)")
    tiny = settings.var_path / "tiny-random-bundle"
    if not is_bundle(tiny):
        testing = importlib.import_module("mllmdr_core.testing")

        print(
            "bundles/demo/ not found: building a TINY RANDOM-INIT bundle in",
            tiny,
            "(NON-CLINICAL, meaningless scores; for trying the plumbing only)",
            flush=True,
        )
        testing.build_tiny_bundle(tiny, non_clinical=True)
    return tiny


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mllmdr-server", description=__doc__)
    p.add_argument(
        "--demo", action="store_true", help="demo mode (generated API key, demo bundle, one session)"
    )
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--bundle", default=None, help="model bundle directory")
    p.add_argument("--database-url", default=None)
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


async def _announce(server: uvicorn.Server, settings: Settings) -> None:
    import httpx

    while not server.started:
        await asyncio.sleep(0.05)
    if not settings.demo:
        return
    async with httpx.AsyncClient(base_url=f"http://{settings.host}:{settings.port}") as client:
        r = await client.post(
            "/v1/sessions", headers={"Authorization": f"Bearer {settings.api_key}"}, json={}
        )
        r.raise_for_status()
        s = r.json()
    print("\n=== MLlm-DR Live demo (screening aid, NOT a diagnosis) ===", flush=True)
    print(f"API key (kept across restarts in the data directory):  {settings.api_key}")
    print(f"Patient page:        {s['patient_url']}")
    print(f"Clinician panel:     {s['panel_url']}")
    print("Open the patient page in one tab (allow camera+mic) and the panel in another.")
    print(
        f"New session: curl -s -X POST -H 'Authorization: Bearer {settings.api_key}' "
        f"http://{settings.host}:{settings.port}/v1/sessions\n",
        flush=True,
    )


async def serve(settings: Settings) -> None:
    import uvicorn

    from stream_server.app import create_app
    from stream_server.engine import CoreEngine
    from stream_server.model_worker import ModelWorker

    bundle = resolve_bundle(settings)
    import torch

    torch.set_num_threads(settings.torch_threads)
    backend = settings.vllm()  # MLLMDR_LLM_BACKEND=vllm: remote vLLM (docs/deploy.md); None: embedded
    worker = None
    if backend is None and settings.assess_worker == "process":
        worker = ModelWorker(
            bundle, torch_threads=settings.assess_worker_threads, nice=settings.assess_worker_nice
        )
    engine = await asyncio.to_thread(
        CoreEngine,
        bundle,
        transcript_source=settings.transcript_source,
        whisper_model=settings.whisper_model,
        backend=backend,
        model_worker=worker,
        eye_pass=settings.eye_pass,
    )
    log.info("loaded bundle %s from %s", engine.info.bundle_id, bundle)
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=WS_MAX_BYTES,
        log_level="warning",
        access_log=False,
    )  # access log would print tokens in URLs
    server = uvicorn.Server(config)
    announce = asyncio.ensure_future(_announce(server, settings))
    try:
        await server.serve()
    finally:
        announce.cancel()
        engine.close()  # the speech-to-text and model worker processes


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds ``serve`` like Ctrl-C, so its ``finally`` stops the worker processes."""


def _on_sigterm(signum: int, _frame: object) -> None:
    # uvicorn handles SIGTERM while it serves (graceful shutdown), then restores this handler and raises
    # the signal again; with the default handler the process died there, before ``serve`` closed the
    # engine: its worker pools' semaphores leaked (resource_tracker warned at exit).
    raise _Terminated(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # idle OpenMP threads sleep instead of spinning against the ingest (as `mllmdr replay` does; read
    # when torch loads, which happens below; the model and speech-to-text workers inherit it)
    passive_openmp()
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    overrides: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "bundle_path": args.bundle,
        "database_url": args.database_url,
    }
    if args.demo:
        overrides["demo"] = True
    try:
        settings = with_demo_secrets(Settings.from_env(**overrides)).ensure_secrets()  # before any load
        settings.var_path.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, _on_sigterm)
        asyncio.run(serve(settings))
    except MllmdrError as exc:
        print(f"mllmdr-server: {exc.code}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
