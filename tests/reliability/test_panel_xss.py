"""The clinician panel renders model text as text: XSS payloads in rationales, evidence and transcript lines
(headless Chromium; the page's CSP is bypassed so that escaping alone is tested). tests/server/test_browser.py
covers one transcript payload; this adds the model's own text (rationale + evidence of the final result)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import pytest
from server.conftest import run_server

from mllmdr_core.assessment import Assessment, Evidence, Grounding
from mllmdr_core.snapshot import SessionSnapshot

from .conftest import make_settings

CHROMIUM = "/usr/bin/chromium"
PAYLOADS = (
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '"><svg onload="window.__xss=3">',
    "javascript:window.__xss=4",
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason="Debian chromium not installed (scripts/setup.sh)"
    ),
]


class XSSEngine:
    """The real engine; its final assessment's rationales and evidence carry XSS payloads, as a model
    (or a poisoned transcript it quotes) could produce."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.info = inner.info
        self.config = inner.config

    @property
    def transcript_source(self) -> str:
        return str(self.inner.transcript_source)

    def new_state(self, session_id: str) -> Any:
        return self.inner.new_state(session_id)

    def assess(
        self, snap: SessionSnapshot, *, session_id: str, kind: Literal["checkpoint", "final"]
    ) -> Assessment:
        result: Assessment = self.inner.assess(snap, session_id=session_id, kind=kind)
        items = [
            item.model_copy(
                update={
                    "rationale": f"rationale {PAYLOADS[i % len(PAYLOADS)]}",
                    "evidence": [Evidence(kind="transcript", text=PAYLOADS[(i + 1) % len(PAYLOADS)])],
                    # the marked (ungrounded) span is built from model text too
                    "grounding": Grounding(
                        score=0.0, ungrounded=[f"rationale {PAYLOADS[i % len(PAYLOADS)]}"]
                    ),
                }
            )
            for i, item in enumerate(result.items)
        ]
        return result.model_copy(update={"items": items})


async def test_rationale_evidence_and_transcript_payloads_render_as_text(tmp_path: Path, engine: Any) -> None:
    from playwright.async_api import async_playwright

    async with run_server(make_settings(tmp_path), XSSEngine(engine)) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            s = await srv.create_session()
            sid = s["session_id"]
            page = await (await browser.new_context(bypass_csp=True)).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(s["panel_url"])
            await page.wait_for_function("document.getElementById('bundle-id').textContent !== '–'")
            for i, payload in enumerate(PAYLOADS):
                r = await srv.http.post(
                    f"/v1/sessions/{sid}/captions",
                    headers=srv.bearer(s["publisher_token"]),
                    json={"text": payload, "speaker": "patient", "start_s": float(i), "end_s": i + 0.5},
                )
                assert r.status_code == 200
            r = await srv.http.post(f"/v1/sessions/{sid}/end", headers=srv.api())
            assert r.json()["assessment"]["items"][0]["rationale"].startswith("rationale <img")
            await page.wait_for_function(
                "document.getElementById('final').dataset.ready === '1'", timeout=60_000
            )
            final_text = await page.locator("#final").inner_text()
            transcript_text = await page.locator("#transcript").inner_text()
            for payload in PAYLOADS:
                assert payload in final_text, payload  # shown verbatim, as text
                assert payload in transcript_text, payload
            marked = await page.locator("#final .ungrounded").all_inner_texts()
            assert marked[: len(PAYLOADS)] == [f"rationale {p}" for p in PAYLOADS]  # marked, as text
            assert "not found in what the model saw" in final_text
            for sel in ("img", "script", "svg"):
                assert await page.locator(f"#final {sel}, #transcript {sel}").count() == 0, sel
            assert await page.evaluate("window.__xss") is None
            assert errors == []
        finally:
            await browser.close()
