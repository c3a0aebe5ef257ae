"""The model worker process: same assessment as in-process, restarted with a typed error when it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from mllmdr_core.errors import BackendError, ConfigError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.retry import RetryPolicy, assess_with_retry
from mllmdr_core.snapshot import SessionSnapshot
from stream_server.engine import CoreEngine
from stream_server.model_worker import ModelWorker, ModelWorkerError


def _snapshot(engine: CoreEngine) -> SessionSnapshot:
    state = engine.new_state("s_worker")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    state.push_audio(voice + 0.01 * rng.standard_normal(voice.size).astype(np.float32), 16000)
    state.add_transcript(TranscriptLine(0.0, 2.0, "clinician", "how have you been sleeping"))
    state.add_transcript(TranscriptLine(2.0, 4.0, "patient", "not well, i wake up tired every day"))
    snap = state.snapshot(30.0)
    state.close()
    return snap


@pytest.fixture(scope="module")
def worker_engine(tiny_bundle: Path) -> Iterator[CoreEngine]:
    engine = CoreEngine(tiny_bundle, model_worker=ModelWorker(tiny_bundle, torch_threads=1, nice=5))
    yield engine
    engine.close()


def _content(result: object) -> dict[str, object]:
    dumped = result.model_dump(exclude={"created_at", "timings_ms"})  # type: ignore[attr-defined]
    return dict(dumped)


def test_worker_assessment_equals_in_process(worker_engine: CoreEngine, engine: CoreEngine) -> None:
    snap = _snapshot(engine)
    in_process = engine.assess(snap, session_id="s_worker", kind="final")
    in_worker = worker_engine.assess(snap, session_id="s_worker", kind="final")
    assert _content(in_worker) == _content(in_process)
    assert len(in_worker.items) == 8


def test_worker_runs_in_another_process_at_lower_priority(worker_engine: CoreEngine) -> None:
    worker = worker_engine._model_worker
    assert worker is not None
    pid = worker.pid()
    assert pid != os.getpid()
    assert psutil.Process(pid).nice() == os.nice(0) + 5


def test_dead_worker_is_a_typed_error_and_the_retry_path_recovers(
    worker_engine: CoreEngine, engine: CoreEngine
) -> None:
    snap = _snapshot(engine)
    worker = worker_engine._model_worker
    assert worker is not None
    first = worker.pid()
    os.kill(first, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(first).wait(10)
    with pytest.raises(ModelWorkerError) as info:
        worker_engine.assess(snap, session_id="s_worker", kind="checkpoint")
    assert isinstance(info.value, BackendError)  # what assess_with_retry retries and pending parks
    # killed again; the session's retry loop makes the assessment in a fresh worker
    os.kill(worker.pid(), signal.SIGKILL)
    time.sleep(0.2)
    retries: list[int] = []
    result = assess_with_retry(
        worker_engine,
        snap,
        session_id="s_worker",
        kind="final",
        policy=RetryPolicy(3, 0.0, 0.0),
        on_retry=lambda failures, exc: retries.append(failures),
    )
    assert retries == [1]
    assert result.kind == "final" and len(result.items) == 8
    assert worker.pid() != first


def test_worker_needs_the_embedded_backend(tiny_bundle: Path) -> None:
    from mllmdr_core.backends.vllm_backend import VLLMSettings

    with pytest.raises(ConfigError, match="embedded backend only"):
        CoreEngine(
            tiny_bundle,
            backend=VLLMSettings(url="http://127.0.0.1:9", model="m"),
            model_worker=ModelWorker(tiny_bundle),
        )


async def test_live_final_survives_a_dead_worker(tmp_path: Path, worker_engine: CoreEngine) -> None:
    """A live session whose model worker was killed: the final is retried (``assessment_retry`` naming the
    dead worker) and made in a fresh worker; the session closes with its final assessment."""
    from .conftest import make_settings, run_server

    worker = worker_engine._model_worker
    assert worker is not None
    first = worker.pid()
    async with run_server(make_settings(tmp_path, assess_retry_base_s=0.05), worker_engine) as server:
        s = await server.create_session()
        sid = s["session_id"]
        ev = await server.events(sid, s["clinician_token"])
        await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": "I sleep badly", "speaker": "patient", "start_s": 0, "end_s": 1},
        )
        os.kill(first, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(first).wait(10)
        r = await server.http.post(f"/v1/sessions/{sid}/end", headers=server.api())
        assert r.json()["state"] == "closed" and r.json()["assessment"]["kind"] == "final"
        retry = (await ev.wait("warning", pred=lambda e: e["code"] == "assessment_retry"))[0]
        assert retry["detail"]["attempt"] == 1 and "model worker process died" in retry["message"]
        closed = (await ev.wait("session.closed"))[0]
        assert closed["final_assessment"] is True
    assert worker.pid() != first


def test_sigterm_stops_the_worker_without_leaking_semaphores(tmp_path: Path, tiny_bundle: Path) -> None:
    """``mllmdr-server`` with the model worker, a session ended (its final made in the worker), then
    SIGTERM (docker stop, systemd): exit 0, the worker gone, no ``resource_tracker`` warning about leaked
    semaphores on stderr (uvicorn re-raised SIGTERM after its shutdown and the default handler killed the
    server before it closed its worker pools)."""
    import subprocess
    import sys

    import httpx

    from .conftest import API_KEY, free_port

    port = free_port()
    env = dict(
        os.environ,
        MLLMDR_ASSESS_WORKER="process",
        MLLMDR_API_KEY=API_KEY,
        MLLMDR_JWT_SECRET="s" * 32,
        MLLMDR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/sigterm.db",
        MLLMDR_VAR_DIR=str(tmp_path / "var"),
    )
    cmd = [sys.executable, "-m", "stream_server", "--bundle", str(tiny_bundle), "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            for _ in range(1200):
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/readyz").status_code == 200:
                        break
                assert proc.poll() is None, f"server exited with {proc.returncode}"
                time.sleep(0.1)
            api = {"Authorization": f"Bearer {API_KEY}"}
            sid = http.post("/v1/sessions", headers=api).json()["session_id"]
            ended = http.post(f"/v1/sessions/{sid}/end", headers=api).json()
            assert ended["state"] == "closed" and ended["assessment"]["kind"] == "final"
        workers = [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        assert workers, "no model worker process under the server"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr[-2000:]
    assert "leaked semaphore" not in stderr and "resource_tracker" not in stderr, stderr[-2000:]
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive and len(gone) == len(workers)
