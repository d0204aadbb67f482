"""Procedural TikZ figures: filled rectangles and circles, arrows, and labelled nodes.

One canonical style: a complete ``\\documentclass[tikz,border=4pt]{standalone}`` document (it
compiles with only TikZ loaded, which is faster than the renderer's default preamble for
snippets), one command per line in reading order (top to bottom, then left to right),
coordinates in centimetres on a 0.5 grid. Because standalone crops to the drawing, a shift
flaw moves one element relative to the others. Flaws edit one element (colour, position),
drop one, or slip the TeX syntax.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Optional

from vinci.data.synth.vocab import COLORS, LIGHT, TITLES, distinct, nudge, other, slip

KINDS = ("rect", "circle", "arrow", "node")
FLAWS = ("colour", "shift", "missing", "syntax")
HEAD = "\\documentclass[tikz,border=4pt]{standalone}\n\\begin{document}\n\\begin{tikzpicture}"
TAIL = "\\end{tikzpicture}\n\\end{document}"


@dataclass
class Item:
    kind: str  # rect | circle | arrow | node
    at: list[float]  # rect x1 y1 x2 y2 | circle x y r | arrow x1 y1 x2 y2 | node x y
    color: str
    text: str = ""


def _half(rng: random.Random, low: float, high: float) -> float:
    return rng.randint(int(low * 2), int(high * 2)) / 2


def _item(rng: random.Random, kind: str, color: str) -> Item:
    x, y = _half(rng, 0, 4), _half(rng, 0, 3)
    if kind == "rect":
        return Item(kind, [x, y, x + _half(rng, 0.5, 2), y + _half(rng, 0.5, 1.5)], color)
    if kind == "circle":
        return Item(kind, [x, y, rng.choice((0.25, 0.5, 0.75))], color)
    if kind == "arrow":
        return Item(kind, [x, y, other(rng, [v / 2 for v in range(11)], x), _half(rng, 0, 3)], color)
    return Item(kind, [x, y], rng.choice(LIGHT), rng.choice(TITLES))


def sample(rng: random.Random) -> list[Item]:
    n = rng.randint(2, 4)
    colors = distinct(rng, COLORS, n)
    return sorted((_item(rng, rng.choice(KINDS), c) for c in colors), key=_reading_order)


def _reading_order(it: Item) -> tuple[float, float]:
    """(-top, left) of the item's box, so commands run top to bottom, then left to right (TikZ's
    y points up): the picture, not a coin toss, decides which command comes first."""
    p = it.at
    if it.kind == "circle":
        return -(p[1] + p[2]), p[0] - p[2]
    if it.kind == "node":
        return -p[1], p[0]
    return -max(p[1], p[3]), min(p[0], p[2])  # rect, arrow


def _num(v: float) -> str:
    return f"{v:g}"


def _command(it: Item) -> str:
    p = [_num(v) for v in it.at]
    if it.kind == "rect":
        return f"\\fill[{it.color}] ({p[0]},{p[1]}) rectangle ({p[2]},{p[3]});"
    if it.kind == "circle":
        return f"\\fill[{it.color}] ({p[0]},{p[1]}) circle ({p[2]});"
    if it.kind == "arrow":
        return f"\\draw[->,thick,{it.color}] ({p[0]},{p[1]}) -- ({p[2]},{p[3]});"
    return f"\\node[draw,fill={it.color}] at ({p[0]},{p[1]}) {{{it.text}}};"


def write(items: list[Item]) -> str:
    return "\n".join([HEAD, *(_command(it) for it in items), TAIL])


def apply_flaw(items: list[Item], code: str, flaw: str, rng: random.Random) -> Optional[str]:
    """The code of `items` with one `flaw`, or None when that flaw does not apply."""
    items = copy.deepcopy(items)
    if flaw == "colour":
        it = rng.choice(items)
        palette = LIGHT if it.kind == "node" else [c for c in COLORS if c not in {i.color for i in items}]
        it.color = other(rng, palette, it.color)
    elif flaw == "shift":
        it = rng.choice(items)
        axis = rng.randrange(2)
        delta = nudge(rng, 0, (1, 1.5), -1.5, 1.5)
        coords = range(axis, 4, 2) if it.kind in ("rect", "arrow") else [axis]
        for i in coords:
            it.at[i] += delta
    elif flaw == "missing":
        if len(items) < 2:
            return None
        items.pop(rng.randrange(len(items)))
    elif flaw == "syntax":
        return slip(rng, code, [(";", ""), ("}", ""), ("\\fill", "\\fil"), ("\\draw", "\\drow"), (") --", ")")])
    else:
        raise ValueError(f"unknown tikz flaw {flaw!r}")
    return write(items)
