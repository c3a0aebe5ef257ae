"""PHQ-8: the eight items, their wording, and the screening cut-off.

Each item is scored 0–3 (0 not at all, 1 several days, 2 more than half the days, 3 nearly every day);
the total is 0–24 and a total of 10 or more is a positive screen (Kroenke et al. 2009). The authors'
code used ≥ 9; we use the standard ≥ 10.
"""

from __future__ import annotations

from dataclasses import dataclass

BINARY_CUTOFF = 10
ITEM_MAX = 3
TOTAL_MAX = 24


@dataclass(frozen=True)
class PHQ8Item:
    key: str  # stable id used in JSON, e.g. "interest"
    dataset_column: str  # DAIC-WOZ split-file column, e.g. "PHQ8_NoInterest"
    title: str  # short human label
    question: str  # the questionnaire wording


PHQ8_ITEMS: tuple[PHQ8Item, ...] = (
    PHQ8Item("interest", "PHQ8_NoInterest", "Interest", "Little interest or pleasure in doing things"),
    PHQ8Item("mood", "PHQ8_Depressed", "Mood", "Feeling down, depressed, or hopeless"),
    PHQ8Item("sleep", "PHQ8_Sleep", "Sleep", "Trouble falling or staying asleep, or sleeping too much"),
    PHQ8Item("tired", "PHQ8_Tired", "Energy", "Feeling tired or having little energy"),
    PHQ8Item("appetite", "PHQ8_Appetite", "Appetite", "Poor appetite or overeating"),
    PHQ8Item(
        "failure",
        "PHQ8_Failure",
        "Self-worth",
        "Feeling bad about yourself, or that you are a failure or have let yourself or your family down",
    ),
    PHQ8Item(
        "concentration",
        "PHQ8_Concentrating",
        "Concentration",
        "Trouble concentrating on things, such as reading the newspaper or watching television",
    ),
    PHQ8Item(
        "psychomotor",
        "PHQ8_Moving",
        "Psychomotor",
        "Moving or speaking so slowly that other people could have noticed, or being so fidgety or restless "
        "that you have been moving around a lot more than usual",
    ),
)
ITEM_KEYS: tuple[str, ...] = tuple(item.key for item in PHQ8_ITEMS)
NUM_ITEMS = len(PHQ8_ITEMS)


def is_positive_screen(total: float) -> bool:
    """True when a PHQ-8 total reaches the standard cut-off (≥ 10)."""
    return total >= BINARY_CUTOFF
