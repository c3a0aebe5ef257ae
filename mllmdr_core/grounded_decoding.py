"""Grounded decoding (issue 18): greedy token choice that keeps the rationale grounded.

The :mod:`mllmdr_core.grounding` check, turned into a decode-time constraint. Text before the reply's
reason marker (``Evaluation Reason:``, found as :func:`mllmdr_core.prompt.parse_output` finds it) is
never constrained. After it, the rationale ``R`` (the text :func:`parse_output` will return as the
reason: NFKC, markdown stripped; the quote rules see its raw whitespace) must stay *completable to
a grounded one*:

* **Quotes** (``"…"``, ``“…”``, ``'…'`` opened after a non-letter, as the check's quote pattern): the
  quoted text so far, normalised, must be a word-start prefix of the normalised prompt transcript
  (``" " + normalise(q)`` in ``" " + transcript``; the last word may be partial, a quote that ends in a
  space or punctuation must end on a word boundary). A quote starts on a letter or digit and holds
  no two punctuation marks in a row, no space before one and only single spaces (so no ellipsis, and
  it cannot stall on characters that normalise away), no other quote character (apostrophes in
  ``"``/``“`` quotes are fine). The closing quote only once the quote holds 3+
  characters and is found as whole words; after a closing ``'`` no letter or digit may follow (else
  the check would not read it as a closing quote). The end of text (EOS) is refused inside a quote.
* **Numbers** (digits and number words, inside quotes too): every complete number must be allowed =
  the numbers of the prompt's data lines ∪ {the item score already generated}; a digit run still at
  the end of the text (``1``, ``0.``) only as a prefix of an allowed number's text. Number words are
  checked as soon as they appear (``seven`` is refused even if ``seventy`` was meant).
* EOS is allowed when :func:`grounding.check` of the rationale is 1.0 (always the case outside a quote
  with no pending digit run, by the rules above).

Choice (:meth:`GroundedDecoder.choose`): candidates in descending logit order; the first that keeps
the rules wins; after the marker, tokens that write nothing (special tokens) are skipped. Tokens
that cannot affect a rule (no digit, quote character or letter run that occurs in a number word,
after NFKC; a precomputed mask) are accepted unchecked while the text is outside a quote and not
inside a digit run. When none of the scanned candidates fits, :meth:`GroundedDecoder.fallback` decides:
inside a quote, the closing quote if the quote is closable, else the single-character token that
continues the quote along the transcript; then any token of the vocabulary in the caller's order that
fits; if none, EOS. Limits: text cut by ``max_new_tokens`` may end inside a digit run that is only a
prefix of an allowed number (or inside a quote, which the check ignores as unclosed); a reply without
the reason marker is not constrained.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mllmdr_core.grounding import (
    _DIGITS_RE,
    _NUMBER_WORD_RE,
    _WORD_NUMBERS,
    check,
    normalise,
    numbers,
    prompt_data,
    prompt_transcript,
)
from mllmdr_core.prompt import _REASON_RE, parse_output
from mllmdr_core.prompt import _normalise as _reply_normalise

_CLOSER = {'"': '"', "“": "”", "'": "'"}
_QUOTE_CHARS = frozenset('"“”\'')
_ALNUM = re.compile(r"[A-Za-z0-9]")
_WORD_CHAR = re.compile(r"[^\W_]")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
# inside a quote: start on a letter/digit; no two punctuation marks in a row, no space before one, no
# double space, no other whitespace, no "_" (so a quote cannot stall on characters that normalise
# away, holds no "..." ellipsis, and reads as the words it matches)
_STALL_RE = re.compile(r"^[\W_]|[^\w\s]{2}|\s[^\w\s]|\s{2}|[^\S ]|_")


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _risky(token: str) -> bool:
    """Whether appending ``token`` can open/close a quote or write a digit or number word."""
    text = unicodedata.normalize("NFKC", token).casefold()
    if "\ufffd" in text or any(c.isdigit() or c in _QUOTE_CHARS for c in text):
        return True
    return any(any(run in word for word in _WORD_NUMBERS) for run in _LETTER_RUN.findall(text))


class GroundingVocab:
    """What grounded decoding needs of a tokenizer, computed once: token strings, the risky mask,
    the quote-closer and single-character token ids. ``decode``: ids → text, as the backend decodes."""

    def __init__(self, decode: Callable[[list[int]], str], vocab_size: int, eos_id: int) -> None:
        self.decode = decode
        self.eos_id = eos_id
        self.strings = [decode([i]) for i in range(vocab_size)]
        self.risky = [_risky(s) for s in self.strings]
        self.char_ids: dict[str, int] = {}
        for i, s in enumerate(self.strings):
            if len(s) == 1 and i != eos_id:
                self.char_ids.setdefault(s, i)


@dataclass(frozen=True)
class _State:
    ok: bool  # the rationale so far is completable to a grounded one
    clean: bool  # outside a quote, no pending digit run or closing ``'``: plain tokens are safe
    quote: str | None = None  # the open quote's opener
    content: str = ""  # the open quote's text so far
    started: bool = True  # the reason marker has appeared


_BAD = _State(ok=False, clean=False)


class GroundedDecoder:
    """Per-item state of grounded decoding: built from the item prompt (module rules)."""

    def __init__(self, vocab: GroundingVocab, prompt: str) -> None:
        self.vocab = vocab
        self.prompt = prompt
        self.transcript = f" {normalise(prompt_transcript(prompt))} "
        self.prompt_numbers = numbers(prompt_data(prompt))

    # -- the rules on a text ---------------------------------------------------------------------
    def _rationale(self, text: str) -> tuple[str | None, int | None]:
        clean = _reply_normalise(text)
        m = _REASON_RE.search(clean)
        if m is None:
            return None, None
        # parse_output's reason before it collapses whitespace (the quote rules see every whitespace
        # token, and the trailing space tells whether an open quote's last word is complete)
        return clean[m.end() :].lstrip(), parse_output(clean[: m.start()]).score

    def _quote_prefix_ok(self, content: str) -> bool:
        if "…" in content or _STALL_RE.search(content):
            return False
        n = normalise(content)
        if not n:
            return True
        last = content[-1]
        partial = last in "'’" or _WORD_CHAR.match(last) is not None
        return (f" {n}" if partial else f" {n} ") in self.transcript

    def _closable(self, content: str) -> bool:
        if len(content) < 3 or "…" in content or _STALL_RE.search(content):
            return False
        n = normalise(content)
        return not n or f" {n} " in self.transcript

    def _numbers_ok(self, rationale: str, allowed: set[float]) -> tuple[bool, bool]:
        """(completable, pending digit run at the end) for the number rule."""
        pending = False
        for m in _DIGITS_RE.finditer(rationale):
            tail = rationale[m.end() :]
            if tail in ("", "."):
                pending = True
                text = m.group(0) + tail
                if float(m.group(0)) not in allowed and not any(
                    _number_text(v).startswith(text) for v in allowed
                ):
                    return False, True
            elif float(m.group(0)) not in allowed:
                return False, False
        for m in _NUMBER_WORD_RE.finditer(rationale):
            if float(_WORD_NUMBERS[m.group(0).lower()]) not in allowed:
                return False, pending
        return True, pending

    def state(self, text: str) -> _State:
        """The rules applied to the generated ``text`` (the whole reply so far)."""
        rationale, score = self._rationale(text)
        if rationale is None:
            return _State(ok=True, clean=True, started=False)
        if "\ufffd" in rationale:
            return _BAD
        allowed = self.prompt_numbers | ({float(score)} if score is not None else set())
        ok, pending = self._numbers_ok(rationale, allowed)
        if not ok:
            return _BAD
        opener: str | None = None
        start = 0
        after_single = False
        for i, c in enumerate(rationale):
            if after_single:
                after_single = False
                if _ALNUM.match(c):
                    return _BAD
            if opener is None:
                if c in '"“' or (c == "'" and (i == 0 or not _ALNUM.match(rationale[i - 1]))):
                    opener, start = c, i + 1
                continue
            if c == _CLOSER[opener]:
                if not self._closable(rationale[start:i]):
                    return _BAD
                after_single = opener == "'"
                opener = None
            elif c in _QUOTE_CHARS and not (c == "'" and opener != "'"):
                return _BAD
        if opener is not None:
            content = rationale[start:]
            if not self._quote_prefix_ok(content):
                return _BAD
            return _State(ok=True, clean=False, quote=opener, content=content)
        # a closing ' at the very end: the next character must not be a letter or digit
        ends_single = after_single
        return _State(ok=True, clean=not pending and not ends_single)

    def final_ok(self, text: str) -> bool:
        """Whether the reply may end here: its rationale passes the grounding check."""
        parsed = parse_output(text)
        if self._rationale(text)[0] is None:
            return True  # no reason marker: never constrained
        return check(parsed.reason, self.prompt, parsed.score).score == 1.0

    # -- the choice --------------------------------------------------------------------------------
    def choose(self, ids: list[int], ranked: Iterable[int], text: str | None = None) -> int | None:
        """The first of ``ranked`` (token ids, best first) that keeps the rules after ``ids``."""
        vocab = self.vocab
        text = vocab.decode(ids) if text is None else text
        now = self.state(text)
        for tok in ranked:
            if tok == vocab.eos_id:
                if now.quote is None and self.final_ok(text):
                    return tok
                continue
            if now.started and not vocab.strings[tok]:
                continue  # a token that writes nothing (special) would stall the rationale
            if now.clean and not vocab.risky[tok]:
                return tok
            if self.state(vocab.decode([*ids, tok])).ok:
                return tok
        return None

    def fallback(self, ids: list[int], ranked: Sequence[int]) -> int:
        """The token when no scanned candidate fits (module docstring)."""
        vocab = self.vocab
        text = vocab.decode(ids)
        now = self.state(text)
        if now.quote is not None:
            picks: list[int] = []
            closer = vocab.char_ids.get(_CLOSER[now.quote])
            if closer is not None and self._closable(now.content):
                picks.append(closer)
            picks += self._continuations(now.content)
            for tok in picks:
                if self.state(vocab.decode([*ids, tok])).ok:
                    return tok
        found = self.choose(ids, ranked, text)
        return vocab.eos_id if found is None else found

    def pick(self, ids: list[int], ranked: Sequence[int], scan: int = 64) -> int:
        """:meth:`choose` over the first ``scan`` of ``ranked`` (all candidates, best first), else
        :meth:`fallback`: the token grounded greedy decoding emits after ``ids``."""
        choice = self.choose(ids, ranked[:scan])
        return self.fallback(ids, ranked) if choice is None else choice

    def _continuations(self, content: str) -> list[int]:
        """Single-character tokens that continue the open quote along the transcript."""
        n = normalise(content)
        partial = bool(content) and (content[-1] in "'’" or _WORD_CHAR.match(content[-1]) is not None)
        needle = f" {n}" if partial else f" {n} " if n else " "
        out: list[int] = []
        at = self.transcript.find(needle)
        while at >= 0 and len(out) < 8:
            nxt = at + len(needle)
            if nxt < len(self.transcript):
                c = self.transcript[nxt]
                tok = self.vocab.char_ids.get(c)
                if tok is not None and tok not in out:
                    out.append(tok)
            at = self.transcript.find(needle, at + 1)
        return out
