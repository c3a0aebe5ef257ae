"""Grounded decoding (issue 18): greedy token choice that keeps the rationale grounded.

The :mod:`mllmdr_core.grounding` check, turned into a decode-time constraint. Text before the reply's
reason marker (``Evaluation Reason:``, found as :func:`mllmdr_core.prompt.parse_output` finds it) is
never constrained. After it, the rationale ``R`` (the text :func:`parse_output` will return as the
reason: NFKC, markdown stripped; the quote rules see its raw whitespace) must stay *completable to
a grounded one*:

* **Quotes** (``"…"``, ``“…”``, ``'…'`` opened after a non-letter, as the check's quote pattern): the
  quoted text so far must be the start of one of the prompt's ``Q:``/``A:`` lines *verbatim* — case
  folded, NFKC, ``’`` as ``'``, whitespace runs as one space, but with the line's own punctuation and
  apostrophes — and the quote closes only at the end of that line or of one of its sentences (the
  template teacher quotes whole questions and answers, so the model is trained on whole-line quotes).
  This is stricter than the check (which matches normalised words), so a quote cannot invent an
  apostrophe or drop a comma the participant's words had. A quote starts on a letter or digit and holds
  no two punctuation marks in a row, no space before one and only single spaces (so no ellipsis, and it
  cannot stall on characters that normalise away), no other quote character (apostrophes in ``"``/``“``
  quotes are fine). The closing quote only once the quote holds 3+ characters, does not end in a space
  and ends its line or a sentence of it; after a closing ``'`` no letter or digit may follow
  (else the check would not read it as a closing quote). The end of text (EOS) is refused inside a
  quote.
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
FALLBACK_SCAN = 2048  # candidates the fallback tries (a 128k vocabulary would cost seconds per step)
_STALL_RE = re.compile(r"^[\W_]|[^\w\s]{2}|\s[^\w\s]|\s{2}|[^\S ]|_")


def verbatim(text: str) -> str:
    """The quote rule's form of a text: NFKC, case folded, ``’`` as ``'``, whitespace runs one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().replace("’", "'").split())


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
        # tokens the reply's markdown stripping erases (only ` * _ # and spaces): after the reason
        # marker they would stall the rationale, so they are skipped there
        self.inert = [bool(s.strip()) and not s.strip(" `*_#") for s in self.strings]
        # the quote pre-filter's form of each token: NFKC, case folded, ’ as '
        self.folded = [unicodedata.normalize("NFKC", s).casefold().replace("’", "'") for s in self.strings]
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
    used: frozenset[int] = frozenset()  # transcript lines quoted already (each at most once)


_BAD = _State(ok=False, clean=False)


class GroundedDecoder:
    """Per-item state of grounded decoding: built from the item prompt (module rules)."""

    def __init__(self, vocab: GroundingVocab, prompt: str) -> None:
        self.vocab = vocab
        self.prompt = prompt
        self.transcript = f" {normalise(prompt_transcript(prompt))} "
        # the Q:/A: lines' texts, verbatim form: a quote is one of them, or its first sentences
        raw = [" ".join(unicodedata.normalize("NFKC", ln).replace("’", "'").split()) for ln in
               prompt_transcript(prompt).splitlines() if ln.strip()]  # fmt: skip
        self.lines = [verbatim(line) for line in raw]
        # continuations are written in the line's own case where folding kept its length
        self._cased = [r if len(r) == len(f) else f for r, f in zip(raw, self.lines, strict=True)]
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

    def _line_starts(self, content: str, used: frozenset[int] = frozenset()) -> list[int]:
        """Indices of the transcript lines not in ``used`` that ``content`` (an open quote's text)
        begins, verbatim: the line's own case except for the first letter."""
        form, cased_form = _quote_form(content), _cased_form(content)
        return [
            k
            for k, (folded, cased) in enumerate(zip(self.lines, self._cased, strict=True))
            if k not in used and folded.startswith(form) and cased[1:].startswith(cased_form[1:])
        ]

    def _quote_prefix_ok(self, content: str, used: frozenset[int] = frozenset()) -> bool:
        if "…" in content or _STALL_RE.search(content):
            return False
        return not content or bool(self._line_starts(content, used))

    def _closable(self, content: str, used: frozenset[int] = frozenset()) -> bool:
        """Whether the open quote may close here: a whole line (or its first sentences) not quoted
        before in this rationale (``used``), passing the check's own rule."""
        if len(content) < 3 or content[-1].isspace() or "…" in content or _STALL_RE.search(content):
            return False
        if f" {normalise(content)} " not in self.transcript:
            return False  # the check's own rule (whole normalised words)
        form = _quote_form(content)
        return any(
            self.lines[k] == form or (self.lines[k].startswith(form + " ") and form[-1] in ".?!")
            for k in self._line_starts(content, used)
        )

    def _line_of(self, content: str, used: frozenset[int]) -> int:
        """The line a closed quote came from (the first not quoted before that it closes on)."""
        form = _quote_form(content)
        starts = self._line_starts(content, used)
        whole = [k for k in starts if self.lines[k] == form]
        return (whole or starts or [-1])[0]

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
        used: set[int] = set()  # lines quoted already: a line is quoted at most once (no quote loops)
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
                if not self._closable(rationale[start:i], frozenset(used)):
                    return _BAD
                used.add(self._line_of(rationale[start:i], frozenset(used)))
                after_single = opener == "'"
                opener = None
            elif c in _QUOTE_CHARS and not (c == "'" and opener != "'"):
                return _BAD
        if opener is not None:
            content = rationale[start:]
            if not self._quote_prefix_ok(content, frozenset(used)):
                return _BAD
            return _State(ok=True, clean=False, quote=opener, content=content, used=frozenset(used))
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
        rests = self._quote_rests(now) if now.quote is not None else None
        closer = _CLOSER[now.quote] if now.quote is not None else ""
        for tok in ranked:
            if tok == vocab.eos_id:
                if now.quote is None and self.final_ok(text):
                    return tok
                continue
            if now.started and (not vocab.strings[tok] or vocab.inert[tok]):
                continue  # a token that writes nothing (special, markdown) would stall the rationale
            if now.clean and not vocab.risky[tok]:
                return tok
            if rests is not None:  # inside a quote: a cheap necessary condition first
                piece = vocab.folded[tok].lstrip(" ") if not now.content else vocab.folded[tok]
                if not piece or not any(
                    rest.startswith(piece) or (rest.endswith(closer) and piece.startswith(rest))
                    for rest in rests
                ):
                    continue
            if self.state(vocab.decode([*ids, tok])).ok:
                return tok
        return None

    def _quote_rests(self, now: _State) -> list[str]:
        """What may still follow the open quote's text (folded form): the rest of each line it can
        continue, then the closer and anything after it."""
        assert now.quote is not None
        n = len(_quote_form(now.content)) if now.content else 0
        starts = self._line_starts(now.content, now.used) if now.content else [
            k for k in range(len(self.lines)) if k not in now.used
        ]  # fmt: skip
        closer = _CLOSER[now.quote]
        rests = [self.lines[k][n:] for k in starts]
        # a token may also close the quote (and go on): any piece that starts with the closer passes
        return [*rests, *(r + closer for r in rests), closer] if rests else [closer]

    def fallback(self, ids: list[int], ranked: Sequence[int]) -> int:
        """The token when no scanned candidate fits (module docstring)."""
        vocab = self.vocab
        text = vocab.decode(ids)
        now = self.state(text)
        if now.quote is not None:
            picks: list[int] = []
            closer = vocab.char_ids.get(_CLOSER[now.quote])
            if closer is not None and self._closable(now.content, now.used):
                picks.append(closer)
            picks += self._continuations(now.content, now.used)
            for tok in picks:
                if self.state(vocab.decode([*ids, tok])).ok:
                    return tok
        found = self.choose(ids, ranked[:FALLBACK_SCAN], text)
        return vocab.eos_id if found is None else found

    def pick(self, ids: list[int], ranked: Sequence[int], scan: int = 64) -> int:
        """:meth:`choose` over the first ``scan`` of ``ranked`` (all candidates, best first), else
        :meth:`fallback`: the token grounded greedy decoding emits after ``ids``."""
        choice = self.choose(ids, ranked[:scan])
        return self.fallback(ids, ranked) if choice is None else choice

    def _continuations(self, content: str, used: frozenset[int]) -> list[int]:
        """Single-character tokens that continue the open quote along a transcript line not quoted
        before, verbatim (the line's own case)."""
        n = len(_quote_form(content)) if content else 0
        lines = self._line_starts(content, used) if content else [
            k for k in range(len(self.lines)) if k not in used
        ]  # fmt: skip
        out: list[int] = []
        for k in lines:
            line, cased = self.lines[k], self._cased[k]
            if len(line) > n:
                tok = self.vocab.char_ids.get(cased[n])
                if tok is None:
                    tok = self.vocab.char_ids.get(line[n])
                if tok is not None and tok not in out:
                    out.append(tok)
        return out


def _cased_form(content: str) -> str:
    """An open quote's text as :func:`_quote_form` but in its own case."""
    form = " ".join(unicodedata.normalize("NFKC", content).replace("’", "'").split())
    return f"{form} " if content[-1].isspace() and form else form


def _quote_form(content: str) -> str:
    """An open quote's text in :func:`verbatim` form, keeping one trailing space (a finished word)."""
    form = verbatim(content)
    return f"{form} " if content[-1].isspace() and form else form
