"""Rationale teachers: OpenAI-compatible client against a real local HTTP server; template teacher."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mllmdr_core.errors import BackendError
from mllmdr_core.frames import QAPair, TranscriptLine
from mllmdr_core.prompt import parse_output
from training.data import DaicWozReader
from training.synth import SynthConfig, generate_corpus
from training.teacher import (
    TEMPLATE_REAL_DATA_NAME,
    TEMPLATE_TEACHER_NAME,
    OpenAICompatibleTeacher,
    RationaleRequest,
    TemplateTeacher,
    requests_for_record,
    write_rationales,
)


class FakeLLM:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, str, float]] = []  # (status, body, hold_s)
        self.release = threading.Event()  # set at close: a held reply stops waiting
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                owner.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                status, body, delay = owner.replies.pop(0) if owner.replies else (200, "{}", 0.0)
                owner.release.wait(delay)  # hold the reply (timeout test) until close at the latest
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def chat(self, content: str) -> str:
        return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


def _request(score: int = 2) -> RationaleRequest:
    q = TranscriptLine(10.0, 12.0, "clinician", "How easy is it for you to get a good night's sleep?")
    a = TranscriptLine(12.5, 15.0, "patient", "Not easy. Most nights I lie awake for hours.")
    return RationaleRequest("1000", "sleep", score, (QAPair(q, (a,), frozenset({"sleep"})),))


def test_openai_teacher_posts_paper_prompt_and_parses_reply(llm: FakeLLM) -> None:
    llm.replies.append(
        (200, llm.chat("Evaluation Result: 2. Evaluation Reason: She lies awake most nights."), 0.0)
    )
    with OpenAICompatibleTeacher(llm.base_url, "teacher-model", api_key="sk-test") as teacher:
        out = teacher.explain(_request())
    assert out.reason == "She lies awake most nights." and out.agreed and out.score == 2
    assert out.target == "Evaluation Result: 2. Evaluation Reason: She lies awake most nights."
    assert out.teacher == "openai-compatible:teacher-model"
    (req,) = llm.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "teacher-model" and [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "Participant: Not easy. Most nights I lie awake for hours." in user
    assert "rating for this item is 2 (more than half the days)" in user
    assert '"Evaluation Result: 2. Evaluation Reason: <your reason>"' in user


def test_openai_teacher_keeps_the_label_when_it_disagrees(llm: FakeLLM) -> None:
    llm.replies.append((200, llm.chat("Evaluation Result: 1. Evaluation Reason: Only some nights."), 0.0))
    with OpenAICompatibleTeacher(llm.base_url, "m") as teacher:
        out = teacher.explain(_request(2))
    assert (
        not out.agreed and out.target.startswith("Evaluation Result: 2.") and llm.requests[0]["auth"] is None
    )


def test_openai_teacher_errors_are_clear(llm: FakeLLM) -> None:
    llm.replies += [(500, "boom", 0.0), (503, "still down", 0.0)]
    with (
        OpenAICompatibleTeacher(llm.base_url, "m", retries=1) as teacher,
        pytest.raises(BackendError, match="503"),
    ):
        teacher.explain(_request())
    assert len(llm.requests) == 2  # one retry
    llm.replies.append((401, '{"error": "bad key"}', 0.0))
    with (
        OpenAICompatibleTeacher(llm.base_url, "m") as teacher,
        pytest.raises(BackendError, match=r"refused.*401"),
    ):
        teacher.explain(_request())
    llm.replies.append((200, "not json", 0.0))
    with OpenAICompatibleTeacher(llm.base_url, "m") as teacher, pytest.raises(BackendError, match="non-JSON"):
        teacher.explain(_request())
    llm.replies.append((200, '{"choices": []}', 0.0))
    with (
        OpenAICompatibleTeacher(llm.base_url, "m") as teacher,
        pytest.raises(BackendError, match="no choices"),
    ):
        teacher.explain(_request())
    llm.replies.append((200, llm.chat("late"), 30.0))  # held until the client gives up (0.2 s)
    with (
        OpenAICompatibleTeacher(llm.base_url, "m", timeout_s=0.2, retries=0) as teacher,
        pytest.raises(BackendError, match="timed out"),
    ):
        teacher.explain(_request())
    port = llm.server.server_address[1]
    llm.close()
    with (
        OpenAICompatibleTeacher(f"http://127.0.0.1:{port}/v1", "m") as teacher,
        pytest.raises(BackendError, match="cannot reach"),
    ):
        teacher.explain(_request())


@pytest.fixture(scope="module")
def synth_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("teacher")
    base = SynthConfig(n=1, seed=5, video=False, rapport_questions=0)
    out = {}
    for mode, cfg in (
        ("words_neutral", replace(base, words_neutral_share=1.0, media_neutral_share=0.0)),
        ("media_neutral", replace(base, words_neutral_share=0.0, media_neutral_share=1.0)),
        ("full", replace(base, words_neutral_share=0.0, media_neutral_share=0.0)),
    ):
        generate_corpus(cfg, root / mode, progress=False)
        (rec,) = list(DaicWozReader(root / mode))
        assert rec.meta["mode"] == mode
        out[mode] = rec
    return out


def test_template_teacher_quotes_transcript_and_planted_cues(
    synth_records: dict[str, Any], tmp_path: Path
) -> None:
    teacher = TemplateTeacher()
    texts = {ln.text for rec in synth_records.values() for ln in rec.transcript}
    for mode, rec in synth_records.items():
        requests = requests_for_record(rec)
        assert [r.item_key for r in requests] == list(rec.labels.items)
        for req in requests:
            out = teacher.explain(req)
            parsed = parse_output(out.target)
            assert parsed.score == rec.labels.items[req.item_key] and not parsed.fallback
            assert out.teacher == TEMPLATE_TEACHER_NAME
            quotes = out.reason.split('"')[1::2]
            assert quotes and all(q in texts for q in quotes)  # every quote is verbatim transcript text
            prompt = " ".join(req.prompt.split())
            assert all(" ".join(q.split()) in prompt for q in quotes)  # ... and in the item's prompt
            numbers = re.findall(r"\d+(?:\.\d+)?", out.reason)
            assert all(n in req.prompt for n in numbers), (numbers, out.reason)  # no number it never saw
            if mode == "words_neutral":
                assert "non-committal" in out.reason
            if mode == "media_neutral":
                assert "rests on the words" in out.reason and "Non-verbally" not in out.reason
    full = synth_records["full"]
    reasons = [TemplateTeacher().explain(r).reason for r in requests_for_record(full)]
    assert any("Non-verbally" in r for r in reasons)
    assert not any(re.search(r"words/min|°|/min", r) for r in reasons)  # cues in words, not numbers
    n = write_rationales(synth_records.values(), teacher, tmp_path / "r.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert n == len(rows) == 24 and {r["teacher"] for r in rows} == {"template (synthetic)"}
    assert {r["dataset"] for r in rows} == {"synthetic"}


def test_template_teacher_on_real_data_quotes_the_prompt_and_says_so(synth_records: dict[str, Any]) -> None:
    rec = synth_records["full"]
    real = replace(rec, meta={})  # no planted evidence: as a DAIC-WOZ / E-DAIC session
    for req in requests_for_record(real):
        out = TemplateTeacher().explain(req)
        assert out.teacher == TEMPLATE_REAL_DATA_NAME
        quotes = out.reason.split('"')[1::2]
        assert all(" ".join(q.split()) in " ".join(req.prompt.split()) for q in quotes)
        assert "Non-verbally" not in out.reason


def test_indicator_citation_states_only_what_the_prompt_line_holds() -> None:
    from mllmdr_core.grounding import check
    from mllmdr_core.prompt import item_prompts
    from training.teacher import cite_indicators, prompt_indicators

    lines = [
        TranscriptLine(0.0, 2.0, "clinician", "How have you been feeling lately?"),
        TranscriptLine(2.5, 6.0, "patient", "Tired, mostly. I sleep badly."),
    ]
    values = {"speech_ratio": 0.4123, "pause_mean_s": 1.85, "pause_count": 4.0, "smile_ratio": 0.9}
    names = ("speech_ratio", "pause_count", "pause_mean_s")
    prompts = item_prompts(lines, has_audio=True, has_video=False, indicators=values, indicator_names=names)
    tired = prompts["tired"].text
    assert prompt_indicators(tired) == {"speech_ratio": "0.41", "pause_count": "4", "pause_mean_s": "1.85"}
    reason = cite_indicators("Low energy.", "tired", tired)
    # ITEM_INDICATORS order for "tired", at most two, values verbatim from the line
    assert reason == "Low energy. Measured in this call: speech_ratio 0.41, pause_mean_s 1.85."
    assert check(reason, tired, 2).score == 1.0
    assert cite_indicators("Low energy.", "appetite", prompts["appetite"].text) == "Low energy."  # none
    plain = item_prompts(lines, has_audio=True, has_video=False)["tired"].text
    assert cite_indicators("Low energy.", "tired", plain) == "Low energy."  # option off: nothing cited
    assert check("Measured in this call: speech_ratio 0.41.", plain, 2).score == 0.0  # and it would show
