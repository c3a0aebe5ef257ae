"""Operations routes: liveness, readiness, Prometheus metrics, the root redirect, the static pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from stream_server.server import ServerDep

PANEL_DIR = Path(__file__).resolve().parent.parent / "panel"
SDK_DIR = Path(__file__).resolve().parent.parent.parent / "client_sdk" / "js"
router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(srv: ServerDep) -> JSONResponse:
    ok = srv.ready and await srv.store.ping()
    bundle_id = srv.services.engine.info.bundle_id
    return JSONResponse({"ready": ok, "bundle_id": bundle_id}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(srv: ServerDep) -> PlainTextResponse:
    return PlainTextResponse(srv.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/panel/")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return FileResponse(PANEL_DIR / "common" / "favicon.svg", media_type="image/svg+xml")


def mount_pages(app: FastAPI) -> None:
    """The clinician panel, the patient demo page, shared assets and the browser SDK."""
    app.mount("/panel", StaticFiles(directory=PANEL_DIR / "clinician", html=True), name="panel")
    app.mount("/patient", StaticFiles(directory=PANEL_DIR / "patient", html=True), name="patient")
    app.mount("/static", StaticFiles(directory=PANEL_DIR / "common"), name="static")
    app.mount("/sdk", StaticFiles(directory=SDK_DIR), name="sdk")
