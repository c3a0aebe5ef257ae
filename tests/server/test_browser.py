"""Real headless Chromium: the patient page publishes fake camera+mic from files, the panel shows it all."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .conftest import RunningServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason="Debian chromium not installed (scripts/setup.sh)"
    ),
]


@pytest.fixture(scope="module")
def fake_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from client_sdk.synth import make_recording

    rec = make_recording(
        tmp_path_factory.mktemp("fake"), duration_s=6.0, fps=15, size=(320, 240), wav_y4m=True
    )
    assert rec.wav is not None and rec.y4m is not None
    return rec.wav, rec.y4m


def chromium_args(wav: Path, y4m: Path | None = None) -> list[str]:
    """Headless Chromium whose fake microphone plays ``wav`` (and fake camera ``y4m``), loopback WebRTC."""
    video = [f"--use-file-for-fake-video-capture={y4m}"] if y4m is not None else []
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        *video,
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]


@pytest.fixture
async def browser(fake_media: tuple[Path, Path]) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    wav, y4m = fake_media
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav, y4m))
        try:
            yield b
        finally:
            await b.close()


async def test_patient_page_publishes_and_panel_shows_indicators_and_result(
    server: RunningServer, browser: object
) -> None:
    s = await server.create_session()
    sid = s["session_id"]
    # bypass_csp: lets Playwright evaluate predicates, and proves escaping without relying on the CSP
    ctx = await browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1280, "height": 1000}, bypass_csp=True
    )
    errors: list[str] = []
    panel = await ctx.new_page()
    panel.on("pageerror", lambda e: errors.append(str(e)))
    await panel.goto(s["panel_url"])
    await panel.wait_for_function("document.getElementById('bundle-id').textContent !== '–'")
    patient = await ctx.new_page()
    patient.on("pageerror", lambda e: errors.append(str(e)))
    await patient.goto(s["patient_url"].replace("/?session", "/?autostart=1&session"))
    await panel.wait_for_function(
        "document.getElementById('status').dataset.state === 'live'", timeout=30_000
    )
    await panel.wait_for_function(
        "Number(document.getElementById('indicator-count').textContent) >= 3", timeout=30_000
    )
    plots = await panel.locator(".plot").count()
    assert plots >= 1
    # model/transcript text is rendered as text, never as HTML
    xss = '<img src=x onerror="window.__xss=1">'
    r = await server.http.post(
        f"/v1/sessions/{sid}/captions",
        headers=server.bearer(s["publisher_token"]),
        json={"text": xss, "speaker": "patient", "start_s": 1.0, "end_s": 2.0},
    )
    assert r.status_code == 200
    await panel.wait_for_function("document.getElementById('transcript').textContent.includes('onerror')")
    assert await panel.locator("#transcript img").count() == 0
    assert await panel.evaluate("window.__xss") is None
    # transcript shown live: a partial line is replaced by its final line
    for text, final in (("I feel", False), ("I feel tired all day", True)):
        r = await server.http.post(
            f"/v1/sessions/{sid}/captions",
            headers=server.bearer(s["publisher_token"]),
            json={"text": text, "speaker": "patient", "start_s": 3.0, "end_s": 4.0, "final": final},
        )
        assert r.status_code == 200
        await panel.wait_for_function(
            f"document.getElementById('transcript').textContent.includes({text!r})"
        )
    lines = await panel.locator("#transcript .line").all_inner_texts()
    last_class = await panel.locator("#transcript .line").last.get_attribute("class")
    assert len(lines) == 2 and "I feel tired all day" in lines[1] and last_class == "line"
    await patient.click("#end")
    await panel.wait_for_function("document.getElementById('final').dataset.ready === '1'", timeout=60_000)
    assert await panel.locator("#final tr[data-item]").count() == 8
    assert "NON-CLINICAL" in (await panel.locator("#labels").inner_text())
    assert await panel.locator("#status").get_attribute("data-state") == "closed"
    total = await panel.locator("#final .total").inner_text()
    final = (await server.http.get(f"/v1/sessions/{sid}", headers=server.api())).json()["final_assessment"]
    assert total == f"Total {final['total']} / 24"
    ARTIFACTS.mkdir(exist_ok=True)
    await panel.screenshot(path=str(ARTIFACTS / "panel.png"), full_page=True)
    await patient.screenshot(path=str(ARTIFACTS / "patient.png"))
    assert errors == []
    await ctx.close()
