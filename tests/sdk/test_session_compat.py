"""The SDK reads the REST answers and events of a newer server that adds fields (protocol v1 stays v1)."""

from __future__ import annotations

import json

import httpx

from client_sdk.session import Session
from stream_server import protocol as p

MAPS = {"audio_processing"}  # fields that are maps (role → object), not objects


def _newer(body: dict[str, object]) -> dict[str, object]:
    """``body`` as a newer server might send it: with fields this SDK does not know, at two depths."""
    out = json.loads(json.dumps(body))
    out["added_later"] = True
    for key, value in out.items():
        if key in MAPS:  # a map keyed by role: a newer server may add a role, with fields of its own
            value["observer"] = {"source": "browser", "added_later": 1}
        elif isinstance(value, dict):
            value["added_later"] = 1
    return out


async def test_rest_answers_with_unknown_fields_are_read() -> None:
    final = next(e for e in p.protocol_examples() if isinstance(e, p.AssessmentResultEvent)).assessment
    info = p.SessionInfo(
        session_id="s_1",
        state="closed",
        created_at=1.0,
        bundle_id="b",
        non_clinical=True,
        final_assessment=final,
    )
    ended = p.SessionEndResponse(session_id="s_1", state="closed", assessment=final)
    bodies = {"/v1/sessions/s_1": info, "/v1/sessions/s_1/end": ended}
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=_newer(json.loads(bodies[request.url.path].model_dump_json())))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        session = Session("http://newer.example", "s_1", token="t", http=http, reconnect=False)
        got = await session.info()
        assert got.audio_processing.pop("observer").source == "browser"  # a role added later is read
        assert got == info
        assert await session.end() == final
    assert seen == ["/v1/sessions/s_1", "/v1/sessions/s_1/end"]
