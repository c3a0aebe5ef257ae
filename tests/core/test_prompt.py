from __future__ import annotations

import pytest

from mllmdr_core.frames import QAPair, TranscriptLine
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN
from mllmdr_core.phq8 import ITEM_KEYS
from mllmdr_core.prompt import (
    PIECE_WORDS,
    ParsedOutput,
    build_item_prompt,
    format_target,
    indicator_line,
    item_prompts,
    parse_output,
    pieces,
    transcript_coverage,
    with_indicator_line,
)


def _pair(q: str, a: str, t: float) -> QAPair:
    return QAPair(
        question=TranscriptLine(t, t + 2, "clinician", q),
        answers=(TranscriptLine(t + 2.5, t + 6, "patient", a),),
    )


PAIRS = [
    _pair("How are you doing today?", "Okay I guess.", 0.0),
    _pair("How have you been sleeping lately?", "Badly, I wake up at three every night.", 10.0),
    _pair("What do you do for fun?", "Nothing really, I stopped playing football.", 20.0),
    _pair("How is your appetite?", "I barely eat.", 30.0),
]


def test_item_prompt_holds_question_pairs_and_slots() -> None:
    prompt = build_item_prompt("sleep", PAIRS, has_audio=True, has_video=True)
    assert 'Rate PHQ-8 item "Sleep": Trouble falling or staying asleep' in prompt
    assert "Q: How have you been sleeping lately?\nA: Badly, I wake up at three every night." in prompt
    assert "football" not in prompt and "appetite" not in prompt  # only pairs relevant to sleep
    assert prompt.count(AUDIO_TOKEN) == 1 and prompt.count(VIDEO_TOKEN) == 1
    assert prompt.index(AUDIO_TOKEN) < prompt.index(VIDEO_TOKEN)
    assert prompt.endswith('Reply "Evaluation Result: N. Evaluation Reason: ..."')


def test_absent_modalities_have_no_slot_and_prompts_stay_short() -> None:
    prompt = build_item_prompt("interest", PAIRS, has_audio=False, has_video=True)
    assert AUDIO_TOKEN not in prompt and VIDEO_TOKEN in prompt
    assert "football" in prompt
    for key in ITEM_KEYS:
        assert len(build_item_prompt(key, PAIRS, has_audio=True, has_video=True)) < 900


def test_max_pairs_and_time_order() -> None:
    many = [_pair(f"How did you sleep on day {i}?", f"Poorly on day {i}.", 10.0 * i) for i in range(10)]
    prompt = build_item_prompt("sleep", many, has_audio=False, has_video=False, max_pairs=3)
    assert prompt.count("\nQ: ") == 3
    days = [int(line.split("day ")[1].rstrip("?")) for line in prompt.splitlines() if line.startswith("Q:")]
    assert days == sorted(days)


def test_no_pairs_and_unknown_item() -> None:
    prompt = build_item_prompt("mood", [], has_audio=True, has_video=False)
    assert "(no interview answers yet)" in prompt
    with pytest.raises(KeyError, match="unknown PHQ-8 item"):
        build_item_prompt("nope", PAIRS, has_audio=True, has_video=True)


def test_format_target_round_trips_through_the_parser() -> None:
    target = format_target(2, "  Wakes at   three most nights. ")
    assert target == "Evaluation Result: 2. Evaluation Reason: Wakes at three most nights."
    assert parse_output(target) == ParsedOutput(2, "Wakes at three most nights.", False)
    with pytest.raises(ValueError):
        format_target(4, "x")


DRIFT = [
    # (text, expected score, expected reason)
    ("Evaluation Result: 2. Evaluation Reason: sleeps badly.", 2, "sleeps badly."),
    ("evaluation result: 3. evaluation reason: no energy", 3, "no energy"),
    ("EVALUATION RESULT: 1 EVALUATION REASON: some days", 1, "some days"),
    ("Evaluation Result: 2 Evaluation Reason: missing period", 2, "missing period"),
    ("Result: 2", 2, ""),
    ("I would give a score of 2/3 because of the pauses.", 2, "because of the pauses."),
    ("Evaluation Result: two. Evaluation Reason: words", 2, "words"),
    ("Evaluation Result: Three. Evaluation Reason: capital word", 3, "capital word"),
    ("Evaluation Result: 5. Evaluation Reason: out of range", None, "out of range"),
    ("Evaluation Result: -1. Evaluation Reason: negative", None, "negative"),
    ("The total score is 6/24 overall.", None, "The total score is 6/24 overall."),
    ("I cannot tell from this interview.", None, "I cannot tell from this interview."),
    ("Evaluation Result：1。Evaluation Reason：睡眠不好", 1, "睡眠不好"),
    ("**Evaluation Result:** 1. **Evaluation Reason:** tired often", 1, "tired often"),
    ("Sure! Here is my answer.\nEvaluation Result: 0. Evaluation Reason: fine", 0, "fine"),
    ("2. The participant reports poor appetite.", 2, "The participant reports poor appetite."),
    ("Score = 3", 3, ""),
    ("Rating: 3 out of 3 - constant fatigue", 3, "constant fatigue"),
    ("Evaluation Result: 2.5. Evaluation Reason: between", 3, "between"),
    ("Evaluation Result: [1]. Evaluation Reason: bracketed", 1, "bracketed"),
    ("She sleeps 3 hours a night.", None, "She sleeps 3 hours a night."),
    ("Evaluation Result: ２. Evaluation Reason: full-width digit", 2, "full-width digit"),
    ("I would rate this item a 2 given the early waking.", 2, "given the early waking."),
    ("Rated at 1; some days only.", 1, "some days only."),
    ("", None, ""),
]


@pytest.mark.parametrize(("text", "score", "reason"), DRIFT)
def test_parser_tolerates_drift(text: str, score: int | None, reason: str) -> None:
    parsed = parse_output(text)
    assert parsed.score == score
    assert parsed.fallback is (score is None)
    assert parsed.reason == reason


def test_long_reason_is_clipped() -> None:
    parsed = parse_output("Evaluation Result: 1. Evaluation Reason: " + "word " * 500)
    assert parsed.score == 1 and len(parsed.reason) <= 600 and parsed.reason.endswith("…")


def _line(start: float, speaker: str, text: str) -> TranscriptLine:
    return TranscriptLine(start, start + 2.0, speaker, text)  # type: ignore[arg-type]


LONG_ANSWER = " ".join(f"I lie awake for hours on night {i} and cannot fall asleep." for i in range(40))


def test_answers_are_never_clipped() -> None:
    transcript = [_line(0, "clinician", "How have you been sleeping?"), _line(3, "patient", LONG_ANSWER)]
    prompts = item_prompts(transcript, has_audio=False, has_video=False)
    assert len(LONG_ANSWER) > 2000
    assert f"A: {LONG_ANSWER}\n" in prompts["sleep"].text
    assert transcript_coverage(transcript, prompts) == 1.0


def test_budget_keeps_whole_pairs_most_relevant_first() -> None:
    transcript = [
        _line(0, "clinician", "How are you?"), _line(3, "patient", "I cannot sleep."),  # answer match: 1
        _line(10, "clinician", "How have you been sleeping?"), _line(13, "patient", "Badly."),  # question: 2
        _line(20, "clinician", "Do you wake up at night?"), _line(23, "patient", LONG_ANSWER),  # 2 + 1
    ]
    free = item_prompts(transcript, has_audio=False, has_video=False)["sleep"]
    assert [p.answer_text for p in free.pairs] == [LONG_ANSWER, "Badly.", "I cannot sleep."]
    budget = len(free.text) - 20  # the least relevant pair no longer fits
    fitted = item_prompts(transcript, has_audio=False, has_video=False, fits=lambda t: len(t) <= budget)
    sleep = fitted["sleep"]
    assert [p.answer_text for p in sleep.pairs] == [LONG_ANSWER, "Badly."]
    assert sleep.text.splitlines()[2:6] == [
        "Q: How have you been sleeping?", "A: Badly.", "Q: Do you wake up at night?", f"A: {LONG_ANSWER}"]


def test_a_pair_too_long_for_the_budget_is_split_into_sentences() -> None:
    transcript = [
        _line(0, "clinician", "How are you?"), _line(3, "patient", "I cannot sleep."),
        _line(10, "clinician", "How have you been sleeping?"), _line(13, "patient", "Badly."),
        _line(20, "clinician", "Do you wake up at night?"), _line(23, "patient", LONG_ANSWER),
    ]
    free = item_prompts(transcript, has_audio=False, has_video=False)["sleep"]
    budget = len(free.text) - 100
    prompts = item_prompts(transcript, has_audio=False, has_video=False, fits=lambda t: len(t) <= budget)
    sleep = prompts["sleep"]
    kept = " ".join(f"I lie awake for hours on night {i} and cannot fall asleep." for i in range(39))
    assert [p.answer_text for p in sleep.pairs] == [kept]  # whole sentences under the one question
    assert sleep.text.splitlines()[2:4] == ["Q: Do you wake up at night?", f"A: {kept}"]
    assert len(sleep.text) <= budget
    # 39 of the 40 twelve-word sentences of 484 patient words reached this item's prompt
    assert transcript_coverage(transcript, {"sleep": sleep}) == pytest.approx(39 * 12 / 484)


def test_a_recognised_answer_with_no_sentence_end_is_split_into_word_runs() -> None:
    # speech-to-text writes no punctuation: the long answer is one "sentence"; before the fix it
    # reached no prompt at all under a budget it did not fit whole (all-or-nothing)
    recognised = " ".join(f"i lie awake for hours on night {i} and cannot fall asleep" for i in range(10))
    transcript = [
        _line(0, "clinician", "how have you been sleeping"), _line(3, "patient", "badly"),
        _line(10, "clinician", "do you wake up at night"), _line(13, "patient", recognised),
    ]
    free = item_prompts(transcript, has_audio=False, has_video=False)["sleep"]
    budget = len(free.text) - 100
    fitted = item_prompts(transcript, has_audio=False, has_video=False, fits=lambda t: len(t) <= budget)
    sleep = fitted["sleep"]
    words = recognised.split()
    assert PIECE_WORDS == 20 and len(words) == 120
    kept = " ".join(words[:100])  # 5 of the 6 runs of 20 words fit; the less relevant pair then does not
    assert [p.answer_text for p in sleep.pairs] == [kept]
    assert sleep.text.splitlines()[2:4] == ["Q: do you wake up at night", f"A: {kept}"]
    assert len(sleep.text) <= budget
    assert transcript_coverage(transcript, {"sleep": sleep}) == pytest.approx(100 / 121)
    assert pieces("a b. c d") == ["a b.", "c d"]  # punctuated text: sentences, whatever their length


def test_budget_drops_a_pair_that_does_not_fit_and_keeps_a_smaller_one() -> None:
    transcript = [
        _line(0, "clinician", "How have you been sleeping?"), _line(3, "patient", "x" * 300),  # one sentence
        _line(10, "clinician", "How are you?"), _line(13, "patient", "I nap a lot."),
    ]
    base = len(item_prompts([], has_audio=False, has_video=False)["sleep"].text)
    fitted = item_prompts(transcript, has_audio=False, has_video=False, fits=lambda t: len(t) <= base + 80)
    sleep = fitted["sleep"]
    assert [p.answer_text for p in sleep.pairs] == ["I nap a lot."]
    assert "x" * 10 not in sleep.text


def test_transcript_coverage_counts_patient_words_that_reached_a_prompt() -> None:
    transcript = [
        _line(0, "clinician", "How have you been sleeping?"), _line(3, "patient", "Badly, I wake up early."),
        _line(10, "clinician", "What is your favourite colour?"), _line(13, "patient", "Blue."),
    ]
    prompts = item_prompts(transcript, has_audio=False, has_video=False, max_pairs=1)
    # max 1 pair per item: sleep shows its own pair, mood the "blue" one, the others the most recent one
    assert {k for k, p in prompts.items() if any(q.answer_text == "Blue." for q in p.pairs)} == set(
        ITEM_KEYS) - {"sleep"}
    assert transcript_coverage(transcript, prompts) == 1.0
    only_sleep = {"sleep": prompts["sleep"]}
    assert transcript_coverage(transcript, only_sleep) == pytest.approx(5 / 6)
    assert transcript_coverage([_line(0, "clinician", "Hello?")], prompts) is None
    assert transcript_coverage([], {}) is None


def test_indicator_line_fixed_order_and_precision_only_when_asked() -> None:
    values = {"head_motion": 1.23456, "pause_count": 4.0, "speech_ratio": 0.5, "t_s": 9.0, "x": 2.0}
    line = indicator_line({**values, "smile_ratio": float("nan")})
    # INDICATOR_INFO order, 2 decimals, counts as integers; non-finite and unknown names left out
    assert line == "Indicators: speech_ratio 0.50, pause_count 4, head_motion 1.23"
    assert indicator_line({"t_s": 1.0}) is None
    # a bundle's prompt_indicators: only those names, in their order (unknown names skipped)
    assert indicator_line(values, ["head_motion", "speech_ratio", "nope"]) == (
        "Indicators: head_motion 1.23, speech_ratio 0.50"
    )
    assert indicator_line(values, ["smile_ratio"]) is None
    lines = [TranscriptLine(0.0, 2.0, "clinician", PAIRS[1].question.text)]  # type: ignore[union-attr]
    lines.append(TranscriptLine(2.5, 6.0, "patient", PAIRS[1].answer_text))
    plain = item_prompts(lines, has_audio=True, has_video=False)
    cited = item_prompts(lines, has_audio=True, has_video=False, indicators=values)
    assert item_prompts(lines, has_audio=True, has_video=False, indicators=None) == plain  # the paper's
    for key in ITEM_KEYS:
        assert cited[key].text == plain[key].text.replace(
            "\nReply", f"\n{line}\nReply"
        )  # one line, just before the reply instruction
    assert with_indicator_line("no reply line", "Indicators: x 1.00") == "no reply line\nIndicators: x 1.00"
    # the budget counts the line: a limit the plain prompt meets but the cited one does not drops pairs
    sleep_plain = len(plain["sleep"].text)
    trimmed = item_prompts(
        lines, has_audio=True, has_video=False, indicators=values, fits=lambda t: len(t) <= sleep_plain
    )
    assert trimmed["sleep"].pairs == () and line in trimmed["sleep"].text
