"""The browser SDK in real headless Chromium: it asks the server for its STUN/TURN list and Chromium
authenticates to the TURN server with the per-session credentials (checked as coturn would)."""

from __future__ import annotations

from pathlib import Path

from stream_server.engine import Engine
from stream_server.protocol import IceServer

from .conftest import make_settings, run_server
from .test_browser import browser, fake_media, pytestmark  # noqa: F401  (fixtures and marks)
from .turn_probe import TurnProbe

GATHER = """async (token) => {
  const { connect } = await import("/sdk/mllmdr.js");
  const session = await connect({ token });
  const iceServers = await session.iceServers();
  const pc = new RTCPeerConnection({ iceServers });
  const errors = [];
  pc.addEventListener("icecandidateerror", (e) => errors.push(e.errorCode));
  pc.createDataChannel("probe");
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    check();
    setTimeout(done, 15000);
  });
  const used = pc.getConfiguration().iceServers;
  pc.close();
  session.close();
  return { iceServers, used, errors };
}"""


async def test_browser_sdk_uses_the_servers_turn_with_session_credentials(
    tmp_path: Path,
    engine: Engine,
    browser: object,  # noqa: F811  (the imported fixture)
) -> None:
    async with TurnProbe(secret="browser-secret") as turn:
        settings = make_settings(
            tmp_path, ice_servers=[IceServer(urls=[turn.url])], turn_secret="browser-secret"
        )
        async with run_server(settings, engine) as server:
            s = await server.create_session()
            ctx = await browser.new_context(bypass_csp=True)  # type: ignore[attr-defined]
            page = await ctx.new_page()
            await page.goto(f"{server.base}/healthz")  # the server's origin, for the module import
            out = await page.evaluate(GATHER, s["publisher_token"])
            await ctx.close()
    [given] = out["iceServers"]
    assert given["urls"] == [turn.url] and given["username"].endswith(":" + s["session_id"])
    assert out["used"][0]["username"] == given["username"]
    assert turn.attempts, out["errors"]  # Chromium asked the relay for an allocation …
    assert all(a.integrity_ok and a.username == given["username"] for a in turn.attempts)  # … correctly
