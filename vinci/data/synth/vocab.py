"""The small shared vocabulary of the synthetic corpus: colours, words, and picking helpers.

Every colour here is a valid name in matplotlib, CSS/SVG and TikZ's xcolor, so one list serves
all four domains; a tiny model sees the same few dozen tokens everywhere.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")

COLORS = ("red", "blue", "green", "orange", "purple", "gray", "teal", "brown", "pink", "black")
LIGHT = ("yellow", "pink", "orange", "gray")  # fills that black text stays readable on
WORDS = ("Sales", "Cost", "Users", "Score", "Growth", "Price", "Profit", "Visits", "Orders", "Rate")
AXES = ("Year", "Month", "Value", "Count", "Region", "Week", "Amount", "Total")
TITLES = ("Home", "News", "About", "Shop", "Blog", "Team", "Plan", "Start", "Data", "Notes")
PHRASES = ("Fast simple tools", "Read the latest news", "Meet our team", "Plan your week",
           "New items every day", "Contact us today", "Open all week", "Join the club")
CATEGORIES = (
    ("A", "B", "C", "D", "E", "F"),
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat"),
    ("North", "South", "East", "West"),
    ("Q1", "Q2", "Q3", "Q4"),
)


def other(rng: random.Random, options: Sequence[T], current: T) -> T:
    """A random option different from `current`."""
    return rng.choice([o for o in options if o != current])


def distinct(rng: random.Random, options: Sequence[T], k: int) -> list[T]:
    """k different options in random order."""
    return rng.sample(list(options), k)


def nudge(rng: random.Random, value: float, steps: Sequence[float], low: float, high: float) -> float:
    """`value` moved by one of +-steps, staying in [low, high] and different from `value`."""
    moves = [value + s for s in steps] + [value - s for s in steps]
    inside = [m for m in moves if low <= m <= high and m != value]
    return rng.choice(inside)


def slip(rng: random.Random, code: str, edits: Sequence[tuple[str, str]]) -> str | None:
    """A syntax slip: replace one random occurrence of one applicable `old` with `new`.

    Only the lines between the first and the last are edited, so the slip sits in the body
    of the program rather than in its fixed header; None when no edit applies.
    """
    lines = code.split("\n")
    spots = [(i, old, new) for i in range(1, len(lines) - 1) for old, new in edits if old in lines[i]]
    if not spots:
        return None
    i, old, new = rng.choice(spots)
    starts = [k for k in range(len(lines[i])) if lines[i].startswith(old, k)]
    k = rng.choice(starts)
    lines[i] = lines[i][:k] + new + lines[i][k + len(old):]
    return "\n".join(lines)
