"""Interview structure: question/answer pairing and PHQ-8 item relevance (one implementation).

Used live (``assess.py`` builds item prompts from it) and by the dataset readers (training data), so
a live call and a dataset session are cut into pairs the same way.

Pairing rules of :func:`pair_qa` (times are session seconds):

1. Only final, non-empty lines count (partial lines are superseded by their final version). Lines are
   ordered by start time; at equal start a clinician line comes first.
2. A clinician line is a *question* when it holds a ``?`` or one of its clauses, after leading
   fillers ("okay so", "I see,"), starts like a question or a prompt ("how…", "do you…", "tell me…",
   "describe…"). Other clinician lines ("mhm", "that sounds hard") are backchannels: they are
   ignored and do not end the current answer. A clinician line from speech-to-text (the interviewer's
   audio track: no punctuation, question words often misheard) is a question when it has at least
   ``ASR_QUESTION_MIN_WORDS`` words.
3. Each patient line is attached to the question before it; consecutive patient lines (also across
   backchannels) merge into one answer. A patient line before any question forms a pair with no
   question (``question is None``).
4. Overlap: a patient line that ends more than ``OVERLAP_TOLERANCE_S`` before the current question
   ends was spoken while the question was still being asked — it is an interjection that belongs to
   the previous answer (when there is one).
5. A question left unanswered is merged with the next question when that follows within
   ``QUESTION_MERGE_GAP_S`` (one question asked in two lines); otherwise it is dropped (no answer
   informs no item).
6. A *follow-up* ("why?", "how so?", "tell me more", "can you give an example", "how did that make you
   feel?", see ``_FOLLOW_UP_RE``) that comes after an answered pair opens its own pair and inherits the
   items of the pair it follows up (its answer is about the same topic).
7. Lines with ``speaker == "unknown"`` are questions when they are shaped like one (rule 2), answers
   otherwise.

When only the patient is heard (no clinician lines: no captions, no interviewer track), the patient's
speech is cut into *turns* (:func:`patient_turns`): a new turn starts where the silence between two lines
is at least ``TURN_GAP_S`` (2 s: the pause in which the interviewer asked the next question), or where
the line would start ``MAX_TURN_S`` (30 s) or more after the turn's first line (a long monologue is cut
at a line boundary, never inside a line). Each turn becomes its own pair: with no question
(:func:`pair_turns`), or, with an interview script, answering the script's questions in order
(:func:`pair_with_script`; a script longer than the interview leaves its last questions unused, turns
past the end of the script have no question). Never one merged answer. :func:`pair_transcript` picks
the right one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mllmdr_core.frames import QAPair, TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS

OVERLAP_TOLERANCE_S = 0.5
QUESTION_MERGE_GAP_S = 3.0
TURN_GAP_S = 2.0  # silence (s) between patient lines that starts a new turn when no interviewer is heard
MAX_TURN_S = 30.0  # a turn is cut at the first line starting this long (s) after the turn's start
SCRIPT_TURN_GAP_S = TURN_GAP_S  # former name

# A short PHQ-8-guided interview (DAIC-style rapport questions, then one or two per item, then a close).
DEFAULT_INTERVIEW_SCRIPT: tuple[str, ...] = (
    "Hi, thank you for talking with me today. How are you doing?",
    "Where are you from originally?",
    "What do you do for work, or how do you spend most of your days?",
    "What are some things you really enjoy doing?",
    "Have you lost interest or pleasure in things you used to enjoy?",
    "How has your mood been lately?",
    "Have you been feeling down, depressed, or hopeless?",
    "How easy is it for you to get a good night's sleep?",
    "Do you have trouble falling or staying asleep, or do you sleep too much?",
    "How has your energy been? Do you feel tired during the day?",
    "Have you noticed any changes in your appetite or eating?",
    "How do you feel about yourself these days?",
    "Do you ever feel like a failure, or that you have let yourself or your family down?",
    "Is it hard to concentrate on things like reading or watching television?",
    "Have other people noticed you moving or speaking slowly, or being restless and fidgety?",
    "Is there anything else you would like to tell me?",
)

# Keyword/regex rules per PHQ-8 item, matched case-insensitively on word boundaries. They decide the
# topic of a pair, not its polarity ("I sleep fine" is about sleep). Keep them reviewable: one list
# per item, each entry a regex fragment.
ITEM_PATTERNS: Mapping[str, tuple[str, ...]] = {
    "interest": (
        r"interest(?:s|ed|ing)?", r"enjoy\w*", r"pleasure\w*", r"fun", r"hobb(?:y|ies)", r"excit\w*",
        r"motivat\w*", r"look(?:ing)? forward", r"passion\w*", r"bored(?:om)?", r"like to do",
        r"(?:don'?t|do not) care",
    ),
    "mood": (
        r"mood\w*", r"depress\w*", r"hopeless\w*", r"sad(?:ness)?", r"unhappy", r"happy", r"blue",
        r"cry(?:ing)?", r"cried", r"tears", r"miserable", r"lonely", r"loneliness", r"upset",
        r"emotion\w*", r"(?:feel\w*|felt|been|get|gets|getting)\s+(?:\w+\s+)?(?:down|low|empty)",
        r"down,? depressed",
    ),
    "sleep": (
        r"sleep\w*", r"slept", r"asleep", r"insomnia", r"nap(?:s|ping)?", r"bed(?:time)?", r"wak(?:e|es|ing)",
        r"woke", r"awake", r"nightmares?", r"(?:stay|staying|stayed) up", r"good night'?s",
    ),
    "tired": (
        r"tired\w*", r"fatigue\w*", r"energ(?:y|etic|ies)", r"exhaust\w*", r"worn out", r"drained",
        r"letharg\w*", r"sluggish", r"weary", r"burn(?:ed|t)? out", r"no strength",
    ),
    "appetite": (
        r"appetite", r"eat(?:s|ing)?", r"ate", r"overeat\w*", r"food", r"meals?", r"hung(?:ry|er)",
        r"weight", r"diet", r"snack\w*", r"breakfast", r"lunch", r"dinner",
    ),
    "failure": (
        r"fail(?:ure|ures|ed|ing)?", r"let (?:\w+ ){0,2}down", r"worthless\w*", r"guilt\w*", r"blame\w*",
        r"disappoint\w*", r"ashamed", r"shame", r"regret\w*", r"proud", r"useless",
        r"bad about (?:yourself|myself|himself|herself)", r"self[- ]?(?:esteem|worth|confidence)",
        r"not good enough", r"feel about (?:yourself|myself)", r"describe (?:you|yourself)",
    ),
    "concentration": (
        r"concentrat\w*", r"focus\w*", r"distract\w*", r"attention", r"read(?:s|ing)?", r"newspapers?",
        r"television", r"tv", r"keep track", r"forget\w*", r"forgot\w*", r"memory", r"decisions?",
        r"think(?:ing)? clearly", r"mind (?:wanders|wandering)",
    ),
    "psychomotor": (
        r"slow(?:ly|ed|er)?", r"restless\w*", r"fidget\w*", r"sit still", r"pac(?:e|es|ing)",
        r"moving around", r"agitat\w*", r"sluggish",
    ),
}

_ITEM_RES: dict[str, re.Pattern[str]] = {
    key: re.compile(r"\b(?:" + "|".join(ITEM_PATTERNS[key]) + r")\b", re.IGNORECASE) for key in ITEM_KEYS
}

_FILLER_RE = re.compile(
    r"^(?:(?:okay|ok|so|well|and|alright|all right|right|now|um+|uh+|hmm+|mhm|mm+|great|good|i see|"
    r"thanks|thank you|nice|cool|yeah|yes|oh|sure|got it|i understand)\b[\s,.!-]*)*",
    re.IGNORECASE,
)
_PRONOUN = r"(?:you|your|there|it|that|this|anything|anyone|someone|things|people|they|he|she|we)"
_QUESTION_START_RE = re.compile(
    r"^(?:what|what's|whats|how|how's|hows|why|when|where|who|which|whose|"
    r"(?:do|does|did|are|is|was|were|have|has|had|can|could|would|will|should|may)\s+" + _PRONOUN + r"|"
    r"tell me|describe|talk about|say more|please (?:tell|describe|say)|"
    r"i'?d like to (?:know|hear|ask)|i (?:want|wanted) to (?:know|ask)|let'?s talk|give me)\b",
    re.IGNORECASE,
)
_FOLLOW_UP_RE = re.compile(
    r"^(?:why|why not|how so|how come|really|since when|how (?:often|long|much)|like what|such as|"
    r"for example|in what ways?|what else|"
    r"what do you mean|what happened|what was that like|and then|is that (?:right|so)|"
    r"(?:can|could) you (?:tell me|say|give me|give) (?:more|an example|me more|a bit more)|"
    r"tell me more|say more|can you tell me about that|tell me about that|"
    r"how (?:did|does|do) (?:that|it) (?:make you feel|feel|affect you))\b",
    re.IGNORECASE,
)
_CLAUSE_SPLIT_RE = re.compile(r"[.!?;]+")


def item_scores(question: str, answer: str) -> dict[str, int]:
    """Relevance of a Q/A pair to each PHQ-8 item: 2 when the question matches, +1 when the answer does.

    Only items with a positive score are returned. The question decides the topic; the answer adds
    items the patient raised on their own ("how are you?" — "I can't sleep").
    """
    scores: dict[str, int] = {}
    for key in ITEM_KEYS:
        pattern = _ITEM_RES[key]
        score = (2 if pattern.search(question) else 0) + (1 if pattern.search(answer) else 0)
        if score:
            scores[key] = score
    return scores


def item_relevance(question: str, answer: str) -> frozenset[str]:
    """PHQ-8 item keys (``phq8.ITEM_KEYS``) that a question/answer pair informs (``ITEM_PATTERNS`` rules)."""
    return frozenset(item_scores(question, answer))


def is_question(text: str) -> bool:
    """True when an interviewer line asks something (rule 2 of the module docstring)."""
    if "?" in text:
        return True
    for clause in _CLAUSE_SPLIT_RE.split(text):
        stripped = _FILLER_RE.sub("", clause.strip())
        if stripped and _QUESTION_START_RE.match(stripped):
            return True
    return False


ASR_QUESTION_MIN_WORDS = 3


def _asr_question(line: TranscriptLine) -> bool:
    """An interviewer line from speech-to-text (the interviewer's track) of at least
    ``ASR_QUESTION_MIN_WORDS`` words: a recogniser writes no ``?`` and often mishears the question word,
    so only length tells a question from a backchannel ("mhm", "I see")."""
    return (
        line.speaker == "clinician"
        and line.source.startswith("asr")
        and len(line.text.split()) >= ASR_QUESTION_MIN_WORDS
    )


def is_follow_up(text: str) -> bool:
    """True for a follow-up question that carries on the last topic ("why?", "tell me more")."""
    return bool(_FOLLOW_UP_RE.match(_FILLER_RE.sub("", text.strip())))


@dataclass
class _Pair:
    question: TranscriptLine | None
    answers: list[TranscriptLine] = field(default_factory=list)
    inherited: frozenset[str] = frozenset()

    def build(self) -> QAPair:
        q_text = self.question.text if self.question else ""
        answer = " ".join(a.text for a in self.answers)
        return QAPair(self.question, tuple(self.answers), item_relevance(q_text, answer) | self.inherited)


def _usable(lines: Sequence[TranscriptLine]) -> list[TranscriptLine]:
    kept = [ln for ln in lines if ln.final and ln.text.strip()]
    return sorted(kept, key=lambda ln: (ln.start_s, 0 if ln.speaker == "clinician" else 1, ln.end_s))


def _merge_lines(first: TranscriptLine, second: TranscriptLine) -> TranscriptLine:
    return TranscriptLine(
        start_s=min(first.start_s, second.start_s),
        end_s=max(first.end_s, second.end_s),
        speaker=first.speaker,
        text=f"{first.text.strip()} {second.text.strip()}",
        source=first.source,
        confidence=min(first.confidence, second.confidence),
        final=True,
    )


def pair_qa(lines: Sequence[TranscriptLine]) -> list[QAPair]:
    """Cut a transcript into question/answer pairs (rules in the module docstring), in time order.

    Every returned pair has at least one answer; ``items`` holds the PHQ-8 items it informs.
    """
    pairs: list[_Pair] = []
    current: _Pair | None = None  # the pair answers attach to
    for line in _usable(lines):
        asks = line.speaker != "patient" and (is_question(line.text) or _asr_question(line))
        if line.speaker == "clinician" and not asks:
            continue  # backchannel: ignored, the current answer goes on
        if asks:
            if current is not None and not current.answers and current.question is not None:
                if line.start_s - current.question.end_s <= QUESTION_MERGE_GAP_S:
                    current.question = _merge_lines(current.question, line)
                    continue
                pairs.remove(current)  # unanswered and far from the next question: dropped
                current = pairs[-1] if pairs else None
            inherited: frozenset[str] = frozenset()
            if current is not None and current.answers and is_follow_up(line.text):
                inherited = current.build().items
            current = _Pair(line, inherited=inherited)
            pairs.append(current)
            continue
        # an answer (patient line, or an unknown speaker's line that is not a question)
        if current is None:
            current = _Pair(None)
            pairs.append(current)
        q = current.question
        if q is not None and not current.answers and line.end_s < q.end_s - OVERLAP_TOLERANCE_S:
            previous = pairs[-2] if len(pairs) >= 2 else None
            if previous is not None and previous.answers:
                previous.answers.append(line)  # interjection while the question was being asked
                continue
        current.answers.append(line)
    return [p.build() for p in pairs if p.answers]


def patient_turns(
    lines: Sequence[TranscriptLine], *, turn_gap_s: float = TURN_GAP_S, max_turn_s: float = MAX_TURN_S
) -> list[list[TranscriptLine]]:
    """The patient's (and ``unknown`` speakers') final lines grouped into turns, in time order: a new
    turn starts after a silence of at least ``turn_gap_s`` or at the first line starting ``max_turn_s``
    or more after the turn's first line (module docstring)."""
    turns: list[list[TranscriptLine]] = []
    for line in _usable(lines):
        if line.speaker == "clinician":
            continue
        if turns:
            turn = turns[-1]
            gap = line.start_s - max(a.end_s for a in turn)
            if gap < turn_gap_s and line.start_s - turn[0].start_s < max_turn_s:
                turn.append(line)
                continue
        turns.append([line])
    return turns


def pair_turns(
    lines: Sequence[TranscriptLine], *, turn_gap_s: float = TURN_GAP_S, max_turn_s: float = MAX_TURN_S
) -> list[QAPair]:
    """One pair with no question per patient turn (:func:`patient_turns`): the pairing when only the
    patient is heard and no interview script is known."""
    turns = patient_turns(lines, turn_gap_s=turn_gap_s, max_turn_s=max_turn_s)
    return [_Pair(None, turn).build() for turn in turns]


def pair_with_script(
    lines: Sequence[TranscriptLine],
    script: Sequence[str] = DEFAULT_INTERVIEW_SCRIPT,
    *,
    turn_gap_s: float = TURN_GAP_S,
    max_turn_s: float = MAX_TURN_S,
) -> list[QAPair]:
    """Pair patient turns (:func:`patient_turns`) with a script's questions when only the patient is heard.

    Turn *k* answers ``script[k]``; turns past the end of the script get ``question=None``; questions past
    the last turn are unused. The question lines are synthetic (``source="script"``, zero length at the
    turn's start). This assumes the clinician follows the script, one question per pause, so the result
    is only as good as that.
    """
    out: list[QAPair] = []
    for k, turn in enumerate(patient_turns(lines, turn_gap_s=turn_gap_s, max_turn_s=max_turn_s)):
        question = None
        if k < len(script):
            t0 = turn[0].start_s
            question = TranscriptLine(t0, t0, "clinician", script[k], source="script")
        out.append(_Pair(question, turn).build())
    return out


def pair_transcript(lines: Sequence[TranscriptLine], script: Sequence[str] | None = None) -> list[QAPair]:
    """Pairs for a live or replayed transcript: :func:`pair_qa` when interviewer lines exist (clinician
    captions/track), else :func:`pair_with_script` with ``script`` (when given), else :func:`pair_turns`
    (one question-less pair per patient turn)."""
    has_interviewer = any(ln.speaker == "clinician" and ln.final and ln.text.strip() for ln in lines)
    if has_interviewer:
        return pair_qa(lines)
    if script:
        return pair_with_script(lines, script)
    return pair_turns(lines)


def pairs_for_item(pairs: Sequence[QAPair], item_key: str, max_pairs: int) -> list[QAPair]:
    """The pairs to show the model for one PHQ-8 item, most important first, at most ``max_pairs``.

    Relevant pairs (``item_key`` in ``pair.items`` or matched by :func:`item_scores`) come first, ordered
    by relevance score (question match 2, answer match 1; a pair listed in ``items`` without a keyword
    match counts 1), then by time (earlier first). The places left go to the *orphans* — pairs relevant
    to no PHQ-8 item ("how are you doing?", a misheard question, a turn without keywords), which would
    otherwise reach no prompt at all: they are shown while a prompt has room and are the first to go
    when it has not (``prompt.item_prompts`` keeps pairs in this order while they fit the budget). The
    orphans are spread over the items: item *i* (``ITEM_KEYS`` order) takes them most recent first
    starting at the (*i* mod *n*)-th of the *n* orphans, so the 8 prompts together show as many different
    orphans as they have free places. A pair about another item is never shown for this one. When no
    pair is relevant, the most recent ``max_pairs`` pairs are returned in time order, so the model still
    sees the latest conversation.
    """
    if max_pairs <= 0 or not pairs:
        return []
    scored: list[tuple[int, float, int, QAPair]] = []
    orphans: list[tuple[float, int, QAPair]] = []
    for idx, pair in enumerate(pairs):
        q_text = pair.question.text if pair.question else ""
        scores = item_scores(q_text, pair.answer_text)
        score = scores.get(item_key, 0)
        if score == 0 and item_key in pair.items:
            score = 1
        if score:
            scored.append((score, pair.start_s, idx, pair))
        elif not scores and not pair.items:
            orphans.append((pair.start_s, idx, pair))
    if not scored:
        recent = sorted(enumerate(pairs), key=lambda ip: (ip[1].start_s, ip[0]))[-max_pairs:]
        return [p for _, p in recent]
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    relevant = [s[3] for s in scored[:max_pairs]]
    room = max_pairs - len(relevant)
    newest_first = [o[2] for o in sorted(orphans, key=lambda o: (-o[0], -o[1]))]
    start = ITEM_KEYS.index(item_key) % len(newest_first) if newest_first else 0
    return [*relevant, *(newest_first[start:] + newest_first[:start])[:room]]
