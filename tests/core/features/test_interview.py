"""Question/answer pairing and PHQ-8 item relevance (mllmdr_core/features/interview.py)."""

from __future__ import annotations

import dataclasses

import pytest

from mllmdr_core.features.interview import (
    DEFAULT_INTERVIEW_SCRIPT,
    ITEM_PATTERNS,
    is_follow_up,
    is_question,
    item_relevance,
    item_scores,
    pair_qa,
    pair_transcript,
    pair_turns,
    pair_with_script,
    pairs_for_item,
    patient_turns,
)
from mllmdr_core.frames import QAPair, Speaker, TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS


def line(start: float, end: float, speaker: Speaker, text: str, *, final: bool = True) -> TranscriptLine:
    return TranscriptLine(start, end, speaker, text, final=final)


def C(start: float, end: float, text: str) -> TranscriptLine:
    return line(start, end, "clinician", text)


def P(start: float, end: float, text: str) -> TranscriptLine:
    return line(start, end, "patient", text)


def shape(pairs: list[QAPair]) -> list[tuple[str | None, str]]:
    return [(p.question.text if p.question else None, p.answer_text) for p in pairs]


PAIRING_CASES = {
    "simple alternation": (
        [C(0, 2, "How are you doing today?"), P(2.5, 4, "pretty good"),
         C(5, 7, "How have you been sleeping?"), P(7.5, 10, "not well")],
        [("How are you doing today?", "pretty good"), ("How have you been sleeping?", "not well")],
    ),
    "consecutive patient lines merge": (
        [C(0, 2, "how has your mood been"), P(2.2, 3, "up and down"), P(3.4, 5, "mostly down"),
         P(6, 7, "especially at night")],
        [("how has your mood been", "up and down mostly down especially at night")],
    ),
    "backchannel does not end the answer": (
        [C(0, 2, "Tell me about your appetite."), P(2, 4, "I skip meals"), C(4.1, 4.5, "mhm"),
         P(4.6, 6, "and eat late at night"), C(6.5, 7, "I see."), C(7.2, 9, "Why is that?"),
         P(9, 11, "no time")],
        [("Tell me about your appetite.", "I skip meals and eat late at night"),
         ("Why is that?", "no time")],
    ),
    "answer with no question": (
        [P(0, 2, "hello can you hear me"), C(2.5, 4, "Yes. Where are you from originally?"),
         P(4.5, 6, "from Ohio")],
        [(None, "hello can you hear me"), ("Yes. Where are you from originally?", "from Ohio")],
    ),
    "unanswered question far from the next is dropped": (
        [C(0, 2, "Do you like your job?"), C(10, 12, "How is your energy?"), P(12.5, 14, "low")],
        [("How is your energy?", "low")],
    ),
    "question asked in two close lines merges": (
        [C(0, 2, "Okay so, about sleep."), C(0.5, 1.0, "mm"), C(2.5, 4, "How many hours do you get?"),
         C(4.2, 6, "Do you wake at night?"), P(6.5, 8, "about five and yes")],
        [("How many hours do you get? Do you wake at night?", "about five and yes")],
    ),
    "overlap: answer starts before the question ends": (
        [C(0, 3, "Do you feel tired a lot?"), P(2.6, 4, "all the time")],
        [("Do you feel tired a lot?", "all the time")],
    ),
    "overlap: interjection inside the next question goes to the previous answer": (
        [C(0, 2, "What do you enjoy?"), P(2, 4, "music"), C(5, 9, "How is your concentration at work?"),
         P(5.5, 6, "and cooking"), P(9.2, 11, "it is bad")],
        [("What do you enjoy?", "music and cooking"), ("How is your concentration at work?", "it is bad")],
    ),
    "overlap: patient still talking when the next question starts": (
        [C(0, 2, "How is your mood?"), P(2, 6, "low lately"), C(5.5, 7, "How about appetite?"),
         P(7.1, 8, "fine")],
        [("How is your mood?", "low lately"), ("How about appetite?", "fine")],
    ),
    "out-of-order input is sorted by time": (
        [P(7.5, 10, "not well"), C(5, 7, "How have you been sleeping?"), P(2.5, 4, "good"),
         C(0, 2, "How are you?")],
        [("How are you?", "good"), ("How have you been sleeping?", "not well")],
    ),
    "partial and empty lines are ignored": (
        [C(0, 2, "How are you?"), line(2, 3, "patient", "goo", final=False), P(2, 3.5, "good"),
         P(4, 4.2, "   ")],
        [("How are you?", "good")],
    ),
    "unknown speaker: questions by shape, answers otherwise": (
        [line(0, 2, "unknown", "what do you do for fun"), line(2.5, 4, "unknown", "I paint")],
        [("what do you do for fun", "I paint")],
    ),
    "unpunctuated ASR-style interviewer lines": (
        [C(0, 2, "okay so how have you been sleeping lately"), P(2.5, 4, "badly"),
         C(4.5, 5, "that's too bad"), C(5.2, 7, "tell me more"), P(7.5, 9, "i wake at four")],
        [("okay so how have you been sleeping lately", "badly"), ("tell me more", "i wake at four")],
    ),
    "patient questions are part of the answer": (
        [C(0, 2, "Have you felt like a failure?"), P(2.5, 4, "what do you mean? sometimes")],
        [("Have you felt like a failure?", "what do you mean? sometimes")],
    ),
    "empty transcript": ([], []),
}


@pytest.mark.parametrize("case", list(PAIRING_CASES), ids=list(PAIRING_CASES))
def test_pair_qa_cases(case: str) -> None:
    lines, expected = PAIRING_CASES[case]
    assert shape(pair_qa(lines)) == expected


def test_pair_qa_times_and_items() -> None:
    pairs = pair_qa([C(0, 2, "How have you been sleeping?"), P(2.5, 4, "not well"), P(4.5, 6, "I am tired")])
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair.start_s, pair.end_s) == (0, 6)
    assert pair.items == frozenset({"sleep", "tired"})


def test_follow_up_inherits_topic() -> None:
    pairs = pair_qa([
        C(0, 2, "Do you have trouble sleeping?"), P(2.5, 4, "yes"),
        C(4.5, 5, "Why?"), P(5.5, 7, "my neighbours are loud"),
        C(8, 9, "Where are you from?"), P(9.5, 10, "Texas"),
    ])
    assert [p.items for p in pairs] == [frozenset({"sleep"}), frozenset({"sleep"}), frozenset()]


ITEM_CASES = [
    ("Do you have trouble falling asleep?", "", {"sleep"}),
    ("How has your energy been?", "I'm exhausted", {"tired"}),
    ("What do you enjoy doing for fun?", "", {"interest"}),
    ("Have you been feeling down?", "", {"mood"}),
    ("Have you been feeling depressed or hopeless?", "", {"mood"}),
    ("How is your appetite?", "I barely eat", {"appetite"}),
    ("Do you feel like you let your family down?", "", {"failure"}),
    ("How would your best friend describe you?", "", {"failure"}),
    ("Is it hard to focus when reading?", "", {"concentration"}),
    ("Do you feel restless or fidgety?", "", {"psychomotor"}),
    ("Where are you from originally?", "Ohio", set()),
    ("How are you doing today?", "I can't sleep and I have no energy", {"sleep", "tired"}),
    ("HOW IS YOUR MOOD?", "", {"mood"}),
    ("Do you sit down for dinner?", "", {"appetite"}),  # "sit down" is not low mood
]


@pytest.mark.parametrize(("question", "answer", "expected"), ITEM_CASES)
def test_item_relevance(question: str, answer: str, expected: set[str]) -> None:
    assert item_relevance(question, answer) == frozenset(expected)


def test_item_scores_weight_question_over_answer() -> None:
    assert item_scores("How do you sleep?", "I nap") == {"sleep": 3}
    assert item_scores("How do you sleep?", "fine") == {"sleep": 2}
    assert item_scores("How are you?", "I nap a lot") == {"sleep": 1}


def test_patterns_cover_every_item_and_script_covers_every_item() -> None:
    assert set(ITEM_PATTERNS) == set(ITEM_KEYS)
    covered: set[str] = set()
    for question in DEFAULT_INTERVIEW_SCRIPT:
        assert is_question(question), question
        covered |= item_relevance(question, "")
    assert covered == set(ITEM_KEYS)
    rapport = [q for q in DEFAULT_INTERVIEW_SCRIPT if not item_relevance(q, "")]
    assert len(rapport) >= 2


@pytest.mark.parametrize(
    ("text", "question", "follow_up"),
    [("mhm", False, False), ("that sounds really hard", False, False), ("Why?", True, True),
     ("can you tell me about that", True, True), ("I see. Where are you from?", True, False),
     ("have a good day", False, False), ("how did that make you feel", True, True)],
)
def test_question_shapes(text: str, question: bool, follow_up: bool) -> None:
    assert is_question(text) is question
    assert is_follow_up(text) is follow_up


def _pairs() -> list[QAPair]:
    return pair_qa([
        C(0, 1, "How are you?"), P(1, 2, "ok but I sleep badly"),
        C(3, 4, "Where are you from?"), P(4, 5, "Ohio"),
        C(6, 7, "How have you been sleeping?"), P(7, 8, "badly"),
        C(9, 10, "Do you nap?"), P(10, 11, "no"),
        C(12, 13, "How is your appetite?"), P(13, 14, "fine"),
    ])


def test_pairs_for_item_relevance_then_time() -> None:
    got = pairs_for_item(_pairs(), "sleep", 6)
    # question+answer match (3) first, then question-only (2) in time order, then answer-only (1), then
    # the orphans (pairs about no item) while there is room; never the appetite pair
    assert [p.question.text for p in got if p.question] == [
        "How have you been sleeping?", "Do you nap?", "How are you?", "Where are you from?"]
    assert [p.question.text for p in pairs_for_item(_pairs(), "sleep", 3) if p.question] == [
        "How have you been sleeping?", "Do you nap?", "How are you?"]
    assert [p.question.text for p in pairs_for_item(_pairs(), "sleep", 1) if p.question] == [
        "How have you been sleeping?"]


def test_pairs_for_item_falls_back_to_most_recent() -> None:
    got = pairs_for_item(_pairs(), "psychomotor", 2)
    assert [p.question.text for p in got if p.question] == ["Do you nap?", "How is your appetite?"]
    assert pairs_for_item(_pairs(), "sleep", 0) == []
    assert pairs_for_item([], "sleep", 3) == []


def test_pairs_for_item_honours_dataset_items() -> None:
    labelled = QAPair(None, (P(0, 1, "it's hard"),), frozenset({"psychomotor"}))
    other = QAPair(None, (P(2, 3, "yes"),))
    assert pairs_for_item([other, labelled], "psychomotor", 3) == [labelled, other]
    assert pairs_for_item([other, labelled], "psychomotor", 1) == [labelled]


def test_pair_with_script_aligns_turns_in_order() -> None:
    script = ("How are you?", "How have you been sleeping?")
    lines = [P(1, 2, "fine"), P(2.5, 3, "thanks"),  # gap < 2 s: one turn
             P(6, 8, "badly"), P(12, 13, "also I am tired")]
    pairs = pair_with_script(lines, script)
    assert shape(pairs) == [("How are you?", "fine thanks"), ("How have you been sleeping?", "badly"),
                            (None, "also I am tired")]
    first = pairs[0].question
    assert first is not None and first.source == "script" and first.speaker == "clinician"
    assert (first.start_s, first.end_s) == (1, 1)
    assert pairs[1].items == frozenset({"sleep"}) and pairs[2].items == frozenset({"tired"})


def test_patient_only_speech_is_cut_into_turns_at_long_pauses() -> None:
    lines = [
        P(0.0, 2.0, "I have been okay"), P(3.9, 5.0, "mostly"),  # gap 1.9 s < 2 s: same turn
        P(7.0, 9.0, "I sleep badly"),  # gap 2.0 s: new turn
        TranscriptLine(9.5, 10.0, "patient", "partial", final=False),  # partial lines never count
        P(20.0, 21.0, "I eat less"), C(21.0, 21.5, "mhm"),  # clinician backchannel: no interviewer question
    ]
    pairs = pair_transcript([ln for ln in lines if ln.speaker == "patient"])
    assert shape(pairs) == [(None, "I have been okay mostly"), (None, "I sleep badly"), (None, "I eat less")]
    assert [(p.start_s, p.end_s) for p in pairs] == [(0.0, 5.0), (7.0, 9.0), (20.0, 21.0)]
    assert [p.items for p in pairs] == [frozenset(), frozenset({"sleep"}), frozenset({"appetite"})]
    assert [[ln.text for ln in t] for t in patient_turns(lines, turn_gap_s=5.0)] == [
        ["I have been okay", "mostly", "I sleep badly"], ["I eat less"]]


def test_long_monologue_is_cut_at_max_turn_length() -> None:
    lines = [P(float(t), float(t) + 0.9, f"w{t}") for t in range(0, 70, 1)]  # 0.1 s gaps, 70 s of speech
    pairs = pair_turns(lines)
    assert [(p.start_s, p.end_s) for p in pairs] == [(0.0, 29.9), (30.0, 59.9), (60.0, 69.9)]
    assert pairs[1].answer_text.split()[0] == "w30" and len(pairs[1].answers) == 30
    assert [(p.start_s, p.end_s) for p in pair_turns(lines, max_turn_s=50.0)] == [(0.0, 49.9), (50.0, 69.9)]


def test_script_longer_than_the_interview_leaves_questions_unused() -> None:
    script = ("How are you?", "How have you been sleeping?", "How is your appetite?")
    pairs = pair_with_script([P(1, 2, "fine"), P(6, 8, "badly")], script)
    assert shape(pairs) == [("How are you?", "fine"), ("How have you been sleeping?", "badly")]
    assert pair_with_script([], script) == []


def test_pair_transcript_prefers_interviewer_lines() -> None:
    patient_only = [P(1, 2, "fine"), P(6, 8, "badly")]
    assert shape(pair_transcript(patient_only, DEFAULT_INTERVIEW_SCRIPT))[0][0] == DEFAULT_INTERVIEW_SCRIPT[0]
    assert shape(pair_transcript(patient_only)) == [(None, "fine"), (None, "badly")]  # turns, not one blob
    with_clinician = [C(0, 1, "How do you sleep?"), *patient_only]
    assert shape(pair_transcript(with_clinician, DEFAULT_INTERVIEW_SCRIPT)) == [
        ("How do you sleep?", "fine badly")]


def test_daic_style_interview() -> None:
    """Unpunctuated DAIC-WOZ-like interviewer lines: intro statements and backchannels drop out."""
    turns = [
        ("c", "hi i'm ellie thanks for coming in today"),
        ("c", "and please feel free to tell me anything your answers are totally confidential"),
        ("c", "are you okay with this"), ("p", "yes"),
        ("c", "where are you from originally"), ("p", "atlanta"),
        ("c", "really"), ("p", "yeah born and raised"),
        ("c", "how easy is it for you to get a good night's sleep"), ("p", "not easy"),
        ("c", "can you give me an example of that"), ("p", "i snap at my kids"),
        ("c", "how would your best friend describe you"), ("p", "loyal"),
        ("c", "okay i think i've asked everything i need to"), ("c", "goodbye"),
    ]
    lines = [C(2 * k, 2 * k + 1.5, text) if who == "c" else P(2 * k, 2 * k + 1.5, text)
             for k, (who, text) in enumerate(turns)]
    pairs = pair_qa(lines)
    assert [(q, a, sorted(p.items)) for (q, a), p in zip(shape(pairs), pairs, strict=True)] == [
        ("are you okay with this", "yes", []),
        ("where are you from originally", "atlanta yeah born and raised", []),
        ("how easy is it for you to get a good night's sleep", "not easy", ["sleep"]),
        ("can you give me an example of that", "i snap at my kids", ["sleep"]),
        ("how would your best friend describe you", "loyal", ["failure"]),
    ]


def test_interviewer_track_asr_lines_are_questions_unless_short() -> None:
    """Speech-to-text of the interviewer's track has no ``?`` and mishears question words: a clinician
    ASR line of 3+ words asks; a shorter one ("mm hmm") is a backchannel, as a caption would be."""
    asr = "asr:pocketsphinx"
    lines = [
        TranscriptLine(0.0, 2.0, "clinician", "i'll shoot the tweet", asr),
        TranscriptLine(3.0, 6.0, "patient", "i wake up at four", asr),
        TranscriptLine(6.2, 6.6, "clinician", "mm hmm", asr),
        TranscriptLine(7.0, 8.0, "patient", "every night", asr),
        TranscriptLine(9.0, 11.0, "clinician", "the little you know things", asr),
        TranscriptLine(12.0, 14.0, "patient", "not really", asr),
    ]
    pairs = pair_qa(lines)
    assert [(p.question.text if p.question else None, p.answer_text) for p in pairs] == [
        ("i'll shoot the tweet", "i wake up at four every night"),
        ("the little you know things", "not really"),
    ]
    captioned = [dataclasses.replace(ln, source="captions") for ln in lines]
    assert [p.question for p in pair_qa(captioned)] == [None]  # captions keep the shape rule
