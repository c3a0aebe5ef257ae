"""Protocol models: round-trips, the discriminated unions and every bad-message code."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from mllmdr_core.errors import ProtocolError
from stream_server import protocol as p


def test_every_server_event_round_trips_through_the_union() -> None:
    events = [e for e in p.protocol_examples() if isinstance(e, p._Event)]
    assert {e.type for e in events} == set(p.SERVER_EVENT_TYPES)  # type: ignore[attr-defined]
    for event in events:
        parsed = p.parse_server_event(event.model_dump_json())
        assert type(parsed) is type(event)
        assert parsed == event
        assert parsed.v == 1


def test_assessment_survives_the_wire() -> None:
    event = next(e for e in p.protocol_examples() if isinstance(e, p.AssessmentResultEvent))
    parsed = p.parse_server_event(json.loads(event.model_dump_json()))
    assert isinstance(parsed, p.AssessmentResultEvent)
    assert parsed.assessment.total == 2
    assert parsed.assessment.items[2].evidence[0].text == "I wake up tired a lot"


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        (
            '{"type":"caption","text":"hi","speaker":"patient","start_s":1,"end_s":2,"id":"c1"}',
            p.CaptionMessage,
        ),
        ('{"type":"checkpoint.request"}', p.CheckpointRequestMessage),
        (b'{"type":"session.end","id":"e"}', p.SessionEndMessage),
        ('{"type":"ping"}', p.PingMessage),
    ],
)
def test_client_messages_parse(raw: str | bytes, cls: type) -> None:
    assert isinstance(p.parse_client_message(raw), cls)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"caption"', "bad_json"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"nope"}', "unknown_type"),
        ('{"type":"assessment.result"}', "unknown_type"),  # a server event is not a client message
        ('{"type":"caption","text":"","start_s":0,"end_s":1}', "invalid_message"),
        ('{"type":"caption","text":"x","start_s":-1,"end_s":1}', "invalid_message"),
        ('{"type":"caption","text":"x","speaker":"robot","start_s":0,"end_s":1}', "invalid_message"),
        ('{"type":"ping","extra":1}', "invalid_message"),
        ('{"type":"caption","text":"' + "a" * 70_000 + '","start_s":0,"end_s":1}', "too_large"),
    ],
)
def test_bad_client_messages_get_codes(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_message(raw)
    assert info.value.code == code
    assert code in p.ERROR_CODES


def test_error_codes_cover_the_core_exception_tree() -> None:
    import mllmdr_core.errors as errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.MllmdrError):
            assert obj.code in p.ERROR_CODES, name
            assert p.error_code_of(obj("x")) == obj.code
    assert p.error_code_of(RuntimeError("x")) == "internal"


def test_bad_server_event_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_server_event('{"type":"indicators","session_id":"s","v":2}')
    assert info.value.code == "invalid_message"


def test_protocol_markdown_lists_every_type() -> None:
    text = p.protocol_markdown()
    for kind in (*p.SERVER_EVENT_TYPES, *p.CLIENT_MESSAGE_TYPES):
        assert f"`{kind}`" in text


def test_server_events_tolerate_fields_a_newer_server_adds() -> None:
    event = next(e for e in p.protocol_examples() if isinstance(e, p.CheckpointResultEvent))
    data = json.loads(event.model_dump_json())
    data["added_later"] = {"x": 1}
    data["assessment"]["added_later"] = 2
    data["assessment"]["items"][0]["added_later"] = "y"
    parsed = p.parse_server_event(json.dumps(data))
    assert parsed == event  # the unknown fields are dropped, every known one kept
    assert p.parse_server_event(data) == event
    data["seq"] = "not a number"  # a known field still has to be right
    with pytest.raises(ProtocolError) as info:
        p.parse_server_event(data)
    assert info.value.code == "invalid_message"


def test_server_models_stay_strict_when_built() -> None:
    with pytest.raises(ValueError, match="extra"):
        p.PongEvent(session_id="s", reff="typo")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="extra"):
        p.CaptionIn.model_validate({"text": "x", "start_s": 0, "end_s": 1, "who": "patient"})


def test_close_codes_and_error_codes_agree() -> None:
    assert p.WS_CLOSE_OF_ERROR["auth_failed"] == p.WsClose.UNAUTHORIZED == 4401
    assert p.WS_CLOSE_OF_ERROR["not_found"] == 4404 and p.WS_CLOSE_OF_ERROR["forbidden"] == 4403
    for close, code in p.ERROR_OF_WS_CLOSE.items():
        assert code in p.ERROR_CODES
        assert p.WS_CLOSE_OF_ERROR[code] == close
    assert set(p.WS_CLOSE_OF_ERROR) <= set(p.ERROR_CODES)
    closed = p.SessionClosedEvent.model_fields["reason"].annotation
    assert closed is p.CloseReason
    assert set(get_args(p.CloseReason.__value__)) == {
        "ended",
        "publisher_gone",
        "error",
        "server_shutdown",
        "expired",
    }


def test_markdown_documents_descriptions_named_types_and_close_codes() -> None:
    text = p.protocol_markdown()
    assert "- `ts`: float — server wall clock, Unix seconds" in text
    assert "- `CloseReason`: `ended` | `publisher_gone` | `error` | `server_shutdown`" in text
    assert "- `4404` NOT_FOUND" in text
