"""Patient answer templates whose content follows a planted PHQ-8 item score (0–3).

``[a|b|c]`` picks one alternative (seeded), so each template yields several phrasings. Level 0 = not
at all, 1 = several days, 2 = more than half the days, 3 = nearly every day. ``NEUTRAL_ANSWERS`` carry
no information about any score (used for "words neutral" sessions, where only voice and face carry the
signal). Every item's questions come from ``mllmdr_core.features.interview.DEFAULT_INTERVIEW_SCRIPT``.

Content-held-out test split (:func:`bank`): every pool of alternatives with at least two entries is cut
in two disjoint banks, the last ``max(1, len // 3)`` entries for the test split and the rest for
train/dev (one of the three templates per (item, level), two of the six neutral answers, one of the two
rapport answers per question, one of the three closing answers, one of two questions where an item has
two). A pool of one entry is shared (the eight item topics need a question each).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

ANSWERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "interest": (
        (
            "I [really enjoy|love] [hiking|cooking|guitar] and I still look forward to it every week.",
            "[Yeah,|Oh,] I have lots of hobbies. I [enjoy|like] seeing friends and going to concerts.",
            "I'm [pretty|really] excited about things lately. I just started [painting|a running club].",
        ),
        (
            "I still enjoy most things, but [some days|now and then] I can't be bothered.",
            "Mostly yes. A few days a week I lose interest in [my hobbies|going out].",
            "I like [reading|gardening], though [sometimes|once in a while] it feels like a chore.",
        ),
        (
            "Not really. [More than half the time|Most days] I don't enjoy the things I used to.",
            "I've lost interest in [music|sports|cooking] lately. It just doesn't feel fun anymore.",
            "I used to love [going out|my hobbies], but most days I'd rather do nothing.",
        ),
        (
            "Nothing really. I don't enjoy anything anymore, [nearly every day|all the time].",
            "I've stopped doing everything I used to love. I just don't care about anything.",
            "[Honestly,|Well,] nothing brings me pleasure. Every day feels empty and pointless.",
        ),
    ),
    "mood": (
        (
            "[My mood has been|I've been feeling] [great|good|pretty upbeat] lately.",
            "I'm [happy|in a good place], honestly. No real down days.",
            "Pretty good. I feel [calm|cheerful] most of the time.",
        ),
        (
            "Mostly fine, but I feel a bit down [now and then|a couple of days a week].",
            "I have [some|a few] low days, but they pass quickly.",
            "It's okay. Sometimes I get a little sad, but not often.",
        ),
        (
            "I've been feeling down [most days|more than half the time] lately.",
            "[Not great.|Honestly, not good.] I feel sad and low most of the week.",
            "I get depressed a lot lately, [more often than not|most days of the week].",
        ),
        (
            "I feel hopeless [nearly every day|all the time]. I cry a lot.",
            "Really bad. I'm depressed [almost every day|every single day] and I can't shake it.",
            "[Terrible.|Awful.] I feel empty and hopeless about everything.",
        ),
    ),
    "sleep": (
        (
            "I sleep [really well|fine], about [eight|seven] hours a night.",
            "Easy. I fall asleep quickly and wake up rested.",
            "No trouble at all, I [sleep like a baby|get a good night's sleep].",
        ),
        (
            "Mostly fine, but [a few nights|some nights] I wake up and can't get back to sleep.",
            "[Sometimes|Now and then] I have trouble falling asleep, maybe [twice|once or twice] a week.",
            "Usually okay, though I stay up too late some nights.",
        ),
        (
            "Not easy. [Most nights|More than half the nights] I lie awake for hours.",
            "I wake up at [three|four] in the morning most nights and can't fall asleep again.",
            "My sleep is bad. Most nights I toss and turn.",
        ),
        (
            "I [barely|hardly] sleep at all. [Every night|Nearly every night] I'm awake until dawn.",
            "Terrible. I have insomnia [nearly every night|every night], or I sleep all day.",
            "I can't sleep. I wake up [exhausted|worse than before] every single morning.",
        ),
    ),
    "tired": (
        (
            "My energy is [great|good]. I feel [full of energy|fresh] most days.",
            "I have plenty of energy. I'm rarely tired.",
            "[Good.|Fine.] I exercise and I feel energetic.",
        ),
        (
            "[Some days|A few days a week] I feel a bit tired in the afternoon.",
            "Mostly okay, but now and then I feel drained.",
            "I get tired [sometimes|once in a while], nothing serious.",
        ),
        (
            "I'm tired [most days|more than half the week]. I have little energy.",
            "[Low.|Not good.] I feel worn out most of the time.",
            "Most days I'm exhausted by [noon|lunchtime].",
        ),
        (
            "I'm exhausted [all the time|every single day]. I have no energy at all.",
            "I feel tired [nearly every day|every day], even getting out of bed is hard.",
            "No energy at all. I'm completely drained [every day|all day long].",
        ),
    ),
    "appetite": (
        (
            "No changes. I eat [three meals a day|normally] and I enjoy food.",
            "My appetite is [fine|good|normal], nothing has changed.",
            "I eat well. [Regular meals|Healthy food], same as always.",
        ),
        (
            "[Sometimes|Now and then] I skip a meal, but mostly I eat normally.",
            "A little. A few days a week I'm not very hungry.",
            "Occasionally I overeat when I'm stressed, but not often.",
        ),
        (
            "I've lost my appetite [most days|more than half the time]. I skip meals a lot.",
            "I eat too much [most days|more than half the week], I snack all the time.",
            "[Yes.|Yeah.] Most days I'm not hungry at all and I've lost weight.",
        ),
        (
            "I [barely|hardly] eat anything. [Every day|Nearly every day] I have no appetite.",
            "I overeat [every day|nearly every day]. I can't stop eating.",
            "I've lost a lot of weight. I forget to eat [almost every day|every day].",
        ),
    ),
    "failure": (
        (
            "I feel [good|pretty good|proud] about myself [these days|lately].",
            "I'm [confident|happy with who I am]. I don't feel like a failure at all.",
            "I think I'm doing [well|fine]. My family is proud of me.",
        ),
        (
            "Mostly good, but [sometimes|now and then] I feel I let people down.",
            "[Once in a while|A few days a month] I feel bad about myself, but it passes.",
            "I'm okay. Some days I doubt myself a little.",
        ),
        (
            "[Often|Most days] I feel like a failure. I let my family down.",
            "Not good. More than half the time I feel worthless.",
            "I blame myself for [a lot of things|everything that went wrong] most days.",
        ),
        (
            "I'm a complete failure. I feel worthless [every day|nearly every day].",
            "I feel like I've let everyone down. I hate myself [all the time|every day].",
            "[Terrible.|Awful.] I feel useless and ashamed [nearly every day|every single day].",
        ),
    ),
    "concentration": (
        (
            "No, I [focus well|concentrate fine]. I read [a lot|every evening].",
            "Not at all. I can watch a whole movie or read a book easily.",
            "My concentration is [good|great]. I keep track of things fine.",
        ),
        (
            "[Sometimes|Now and then] my mind wanders when I read, but mostly it's fine.",
            "A little. A few days a week I get distracted easily.",
            "Occasionally I lose focus at work, nothing major.",
        ),
        (
            "Yes, [most days|more than half the time] I can't focus on reading at all.",
            "It's hard. I forget things and lose track of what I'm doing most days.",
            "Yeah. Most days I read the same page [over and over|again and again].",
        ),
        (
            "I can't concentrate on anything, [nearly every day|every day]. I can't even watch TV.",
            "My mind is blank all the time. I can't focus [at all|on anything].",
            "Very hard. I can't read or think clearly [every single day|nearly every day].",
        ),
    ),
    "psychomotor": (
        (
            "No, nobody has [noticed|mentioned] anything like that.",
            "Not at all. I move and talk [normally|like I always do].",
            "No. I'm [calm|relaxed] and I don't fidget.",
        ),
        (
            "[Sometimes|Once in a while] I'm a bit restless, but nobody really notices.",
            "A little. Some days I feel slow, but not much.",
            "Maybe a few times. My friend said I seemed slow one day.",
        ),
        (
            "Yes, [my wife|my friend|my sister] says I move and speak slowly most days.",
            "I'm restless most of the time. I can't sit still.",
            "People [have noticed|keep saying] that I talk slower than before.",
        ),
        (
            "Yes. I move and speak so slowly [every day|all the time] that everyone notices.",
            "I'm so restless I pace around [all day|every day]. I can't sit still at all.",
            "Everyone says I'm slowed down [all the time|every single day]. Even talking is hard.",
        ),
    ),
}

NEUTRAL_ANSWERS: tuple[str, ...] = (
    "I don't know. It's hard to say.",
    "[Hmm,|Well,] I'm not sure how to answer that.",
    "I'd rather not [go into that|talk about that] right now.",
    "It depends on the [day|week], I guess.",
    "I haven't really thought about it.",
    "[Maybe.|Perhaps.] I'm not sure.",
)
RAPPORT_ANSWERS: dict[str, tuple[str, ...]] = {  # keyed by a word of the rapport question
    "from": (
        "I'm from [Los Angeles|Chicago|a small town in Ohio|Texas] originally.",
        "[Boston|Denver], mostly.",
    ),
    "work": (
        "I work as [a teacher|an accountant|a nurse|a mechanic], [mostly|usually] [mornings|evenings].",
        "I spend most of my days at [work|home|school].",
    ),
    "": ("[I'm here.|Okay, I guess.] Thanks for having me.", "[Fine|Alright], thank you."),
}
CLOSING_ANSWERS: tuple[str, ...] = (
    "No, I think that's all.",
    "[Not really.|No.] Thank you.",
    "I think I said everything.",
)

_ALT_RE = re.compile(r"\[([^\]]+)\]")


def fill(template: str, rng: np.random.Generator) -> str:
    """Resolve every ``[a|b|c]`` group with one seeded choice."""
    return _ALT_RE.sub(lambda m: str(rng.choice(m.group(1).split("|"))), template)


def bank(pool: Sequence[T], *, held_out: bool) -> tuple[T, ...]:
    """The test bank (``held_out``) or the train/dev bank of ``pool``: disjoint when ``len(pool) ≥ 2``."""
    if len(pool) < 2:
        return tuple(pool)
    cut = len(pool) - max(1, len(pool) // 3)
    return tuple(pool[cut:]) if held_out else tuple(pool[:cut])


def answer_for(
    item: str, level: int, rng: np.random.Generator, *, neutral: bool, held_out: bool = False
) -> tuple[str, int]:
    """(answer text, template index in the full pool) for an item at a planted level; neutral answers
    when masked; from the test bank when ``held_out``."""
    full = NEUTRAL_ANSWERS if neutral else ANSWERS[item][level]
    pool = bank(full, held_out=held_out)
    k = int(rng.integers(len(pool)))
    return fill(pool[k], rng), full.index(pool[k])


def rapport_answer(question: str, rng: np.random.Generator, *, held_out: bool = False) -> str:
    """A content-free answer that fits a rapport question."""
    key = next((k for k in RAPPORT_ANSWERS if k and k in question.lower()), "")
    pool = bank(RAPPORT_ANSWERS[key], held_out=held_out)
    return fill(pool[int(rng.integers(len(pool)))], rng)
