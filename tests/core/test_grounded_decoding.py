"""Grounded decoding (issue 18): the decoder keeps every rationale grounded, whatever the logits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mllmdr_core.grounded_decoding import GroundedDecoder, GroundingVocab
from mllmdr_core.grounding import check, quoted_spans
from mllmdr_core.prompt import parse_output

TOKENIZER = Path(__file__).resolve().parents[2] / "bundles" / "demo" / "tokenizer"
PROMPT = "\n".join(
    [
        'Rate PHQ-8 item "Sleep": trouble falling or staying asleep.',
        "Q: How have you been sleeping?",
        "A: I sleep maybe 4 hours, I can't fall asleep since 2019.",
        "Indicators: speech_ratio 0.41, pause_count 12",
        'Reply "Evaluation Result: N. Evaluation Reason: ..."',
    ]
)
HEAD = "Evaluation Result: 2. Evaluation Reason:"


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def vocab(tok: PreTrainedTokenizerBase) -> GroundingVocab:
    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids, skip_special_tokens=True))

    return GroundingVocab(decode, len(tok), tok.eos_token_id)


def _ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])




def _run(dec: GroundedDecoder, ids: list[int], logits: list[list[float]]) -> tuple[list[int], bool]:
    out = list(ids)
    for scores in logits:
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        choice = dec.choose(out, ranked[:32])
        if choice is None:
            choice = dec.fallback(out, ranked)
        if choice == dec.vocab.eos_id:
            return out, True
        out.append(choice)
    return out, False


def _grounding(text: str) -> float:
    parsed = parse_output(text)
    return check(parsed.reason, PROMPT, parsed.score).score


def test_any_logits_give_a_grounded_rationale(tok: PreTrainedTokenizerBase, vocab: GroundingVocab) -> None:
    rng = random.Random(0)
    head = _ids(tok, HEAD)
    favoured = _ids(tok, ' " “ \' 4 2019 12 0.41 7 seven three sleep hours I can fall asleep since 9 ”')
    favoured.append(vocab.eos_id)
    ended = quotes = 0
    for _trial in range(120):
        dec = GroundedDecoder(vocab, PROMPT)
        bias = {i: rng.random() * 4 for i in favoured}
        logits = [[rng.gauss(0, 1) + bias.get(i, 0.0) for i in range(len(tok))] for _ in range(30)]
        ids, eos = _run(dec, head, logits)
        text = str(tok.decode(ids, skip_special_tokens=True))
        state = dec.state(text)
        if eos or (state.quote is None and state.clean):
            assert _grounding(text) == 1.0, text
        ended += eos
        quotes += len(quoted_spans(parse_output(text).reason))
    assert ended >= 20 and quotes >= 20  # the property was exercised on finished replies with quotes


def test_quote_is_forced_verbatim(tok: PreTrainedTokenizerBase, vocab: GroundingVocab) -> None:
    dec = GroundedDecoder(vocab, PROMPT)
    head = _ids(tok, HEAD + ' The participant said "I sleep')
    wrong = _ids(tok, " well")  # the model prefers to misquote, then anything but the transcript
    steps = []
    for _ in range(80):
        scores = [0.0] * len(tok)
        for rank, i in enumerate(wrong):
            scores[i] = 10.0 - rank
        steps.append(scores)
    ids, _eos = _run(dec, head, steps)
    text = str(tok.decode(ids, skip_special_tokens=True))
    (quote,) = quoted_spans(parse_output(text).reason)
    assert quote == "I sleep maybe 4 hours, I can't fall asleep since 2019."  # the whole line, verbatim
    assert _grounding(text) == 1.0 and text.endswith(" well")
    unfinished = _ids(tok, HEAD + ' "I sleep well')
    assert not dec.state(str(tok.decode(unfinished))).ok  # "sleep well" is not in the transcript
    assert not dec.state(str(tok.decode(_ids(tok, HEAD + ' "I can')))).ok  # not where a line starts


def _accepted(dec: GroundedDecoder, ids: list[int], more: list[int]) -> bool:
    """Whether the decoder lets ``more`` follow ``ids`` token by token (each the only candidate)."""
    out = list(ids)
    for t in more:
        if dec.choose(out, [t]) != t:
            return False
        out.append(t)
    return True


def test_numbers_not_in_the_prompt_cannot_appear(tok: PreTrainedTokenizerBase, vocab: GroundingVocab) -> None:
    dec = GroundedDecoder(vocab, PROMPT)
    head = _ids(tok, HEAD + " Sleeps about")
    for wrong in (" 7 hours", " 5 hours", " seven hours", " 13 hours", " 0.4 hours", " 40 hours"):
        assert not _accepted(dec, head, _ids(tok, wrong)), wrong
    for right in (" 4 hours", " 12 pauses", " 0.41 speech", " 2019.", " four hours"):
        assert _accepted(dec, head, _ids(tok, right)), right
    assert _accepted(dec, head, _ids(tok, " 1"))  # may become the allowed 12 ...
    assert not _accepted(dec, head, _ids(tok, " 1."))  # ... but never 1.x
    assert dec.choose(head + _ids(tok, " 1"), [vocab.eos_id]) is None  # nor end as 1


def test_the_item_score_may_be_cited(tok: PreTrainedTokenizerBase, vocab: GroundingVocab) -> None:
    dec = GroundedDecoder(vocab, PROMPT)
    for score, ok in ((2, True), (3, False)):
        head = _ids(tok, f"Evaluation Result: {score}. Evaluation Reason: I gave")
        assert _accepted(dec, head, _ids(tok, " 2 points")) is ok


def test_text_before_the_reason_marker_is_free(tok: PreTrainedTokenizerBase, vocab: GroundingVocab) -> None:
    dec = GroundedDecoder(vocab, PROMPT)
    head = _ids(tok, "Evaluation Result:")
    for text in (" 7", ' "made up"', " seven"):
        assert _accepted(dec, head, _ids(tok, text))
    assert dec.choose(head, [vocab.eos_id]) == vocab.eos_id
    # inside an unfinished quote the reply may not end
    open_quote = _ids(tok, HEAD + ' He said "I sleep')
    assert dec.choose(open_quote, [vocab.eos_id]) is None


def test_quotes_keep_the_transcripts_own_punctuation(
    tok: PreTrainedTokenizerBase, vocab: GroundingVocab
) -> None:
    """Stricter than the check's normalised words: no invented apostrophe, no dropped comma, the
    line's own case after the first letter."""
    dec = GroundedDecoder(vocab, PROMPT)
    for bad in (' "I ca\'n', ' "I sleep maybe 4 hours I', ' "I sleep, maybe', ' "I SLEEP'):
        assert not dec.state(str(tok.decode(_ids(tok, HEAD + bad)))).ok, bad
    for good in (' "I sleep maybe 4 hours, I can\'t', ' "i sleep maybe', ' "How have'):
        assert dec.state(str(tok.decode(_ids(tok, HEAD + good)))).ok, good
    assert dec._closable("I sleep maybe 4 hours, I can't fall asleep since 2019.")
    assert not dec._closable("I sleep maybe 4 hours") and not dec._closable("hours, I can't")
