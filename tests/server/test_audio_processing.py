"""``stream_server.audio_processing``: an offer's reported capture settings → session meta → assessments."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from stream_server.audio_processing import META_KEY, from_meta, reported, stamp, to_meta
from stream_server.protocol import Offer, _example_assessment

BROWSER_OFFER = {
    "sdp": "v=0",
    "audio_processing": {
        "patient": {
            "source": "browser",
            "echo_cancellation": False,
            "noise_suppression": False,
            "auto_gain_control": False,
            "channel_count": 2,
            "sample_rate": 44100,
        },
        "interviewer": {"source": "browser"},
    },
}


def test_reported_settings_survive_the_store_and_reach_every_assessment() -> None:
    processing = reported(Offer.model_validate(BROWSER_OFFER).audio_processing)
    meta = json.loads(json.dumps({"external_id": "x", META_KEY: to_meta(processing)}))  # stored as JSON
    assert meta[META_KEY]["interviewer"] == {"source": "browser"}  # unreported settings left out
    back = from_meta(meta)
    assert back == processing and back["patient"].sample_rate == 44100
    result = stamp(_example_assessment("s_a", "final"), back)
    dumped = result.model_dump(mode="json")["audio_processing"]
    assert dumped["patient"]["auto_gain_control"] is False and dumped["patient"]["channel_count"] == 2
    assert stamp(result, {}) is result and from_meta({}) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"speaker": {"source": "browser"}},  # not a track role
        {"patient": {"echo_cancelation": False}},  # misspelt setting
        {"patient": {"sample_rate": 0}},
        {"patient": {"source": "webrtc"}},
    ],
)
def test_offer_refuses_malformed_audio_processing(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Offer.model_validate({"sdp": "v=0", "audio_processing": bad})
