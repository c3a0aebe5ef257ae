from __future__ import annotations

from mllmdr_core.grounding import check, grounding_share, numbers, quoted_spans, split_sentences
from mllmdr_core.model.tokenizer import AUDIO_TOKEN
from mllmdr_core.prompt import REPLY_LINE, SCALE_LINE

PROMPT = "\n".join([
    'Rate PHQ-8 item "Sleep": Trouble falling or staying asleep, or sleeping too much.',
    SCALE_LINE,
    "Q: How have you been sleeping?",
    "A: Badly. I wake up at 3 every night, maybe four hours of sleep, can't get back to sleep.",
    f"Audio: {AUDIO_TOKEN}",
    REPLY_LINE,
])


def test_quotes_found_in_the_prompt_transcript_are_grounded() -> None:
    got = check('The patient says "I wake up at 3 every night". They “can’t get back to sleep”.', PROMPT, 2)
    assert got.score == 1.0 and got.ungrounded == ()
    # case, punctuation and whitespace are ignored; an ellipsis matches its parts in order
    assert check("Says 'BADLY  i wake up' … and \"maybe four hours ... sleep\".", PROMPT, 2).score == 1.0


def test_quotes_not_in_the_prompt_transcript_are_ungrounded() -> None:
    text = 'Reports "I can\'t concentrate on anything". Also "wake up at 3". Mentions "Scale: 0 not at all".'
    got = check(text, PROMPT, 2)
    assert got.ungrounded == (
        'Reports "I can\'t concentrate on anything".', 'Mentions "Scale: 0 not at all".')
    assert got.score == 1 / 3
    # whole words only, and the parts of an ellipsis quote must come in order
    assert check('Says "wake u".', PROMPT, 1).score == 0.0
    assert check('Says "four hours ... I wake up".', PROMPT, 1).score == 0.0


def test_numbers_must_appear_in_the_prompt_with_the_score_aside() -> None:
    assert check("Wakes at 3 and sleeps about four hours.", PROMPT, 0).score == 1.0
    assert check("Sleeps 4 hours a night.", PROMPT, 0).score == 1.0  # digits match the word "four"
    got = check("Scored 2 for sleep. Speaks at about 134 words/min. Sleeps six hours.", PROMPT, 2)
    assert got.ungrounded == ("Speaks at about 134 words/min.", "Sleeps six hours.")
    assert got.score == 1 / 3
    # the score is exempt only as the item's own score: 2 is in neither the transcript nor the score
    assert check("Scored 2 for sleep.", PROMPT, 1).ungrounded == ("Scored 2 for sleep.",)
    assert check("A PHQ-8 item on sleep; no one asked.", PROMPT, 1).score == 1.0  # names and "one" aside


def test_plain_sentences_and_empty_rationales_are_grounded() -> None:
    assert check("Sleep seems disturbed most nights.", PROMPT, 2).score == 1.0
    assert check("", PROMPT, 2).score == 1.0
    assert grounding_share([1.0, 0.5, 0.0, 0.5]) == 0.5
    assert grounding_share([]) is None


def test_helpers() -> None:
    assert quoted_spans("can't sleep and doesn't eat; said 'not much' and “really tired”") == [
        "not much", "really tired"]
    assert split_sentences('Said "I wake up. Then I lie awake." Scores 2.  Fine') == [
        'Said "I wake up. Then I lie awake." Scores 2.', "Fine"]
    assert numbers("at 3 a.m., 0.41 of the time, PHQ-8, twenty days, no one") == {3.0, 0.41, 20.0}
