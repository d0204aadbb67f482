"""Procedural SVG scenes: a few rects, circles, lines, triangles and a word on a 128 px canvas.

One canonical style: an ``<svg>`` root with width/height 128 and one self-closing element per
line, attributes in a fixed order, coordinates on an 8 px grid, elements in reading order
(top to bottom, then left to right). Flaws edit one element (colour, position), drop one, or
slip the XML syntax.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Optional

from vinci.data.synth.vocab import COLORS, TITLES, distinct, nudge, other, slip

SIZE = 128
SHAPES = ("rect", "circle", "line", "polygon", "text")
FLAWS = ("colour", "shift", "missing", "syntax")


@dataclass
class Shape:
    kind: str  # rect | circle | line | polygon | text
    points: list[int]  # rect x y w h | circle cx cy r | line x1 y1 x2 y2 | polygon x1 y1 x2 y2 x3 y3 | text x y
    color: str
    text: str = ""


def _grid(rng: random.Random, low: int, high: int) -> int:
    return 8 * rng.randint(low // 8, high // 8)


def _shape(rng: random.Random, kind: str, color: str) -> Shape:
    if kind == "rect":
        return Shape(kind, [_grid(rng, 8, 72), _grid(rng, 8, 72), _grid(rng, 16, 48), _grid(rng, 16, 48)], color)
    if kind == "circle":
        return Shape(kind, [_grid(rng, 24, 104), _grid(rng, 24, 104), _grid(rng, 8, 24)], color)
    if kind == "line":
        return Shape(kind, [_grid(rng, 8, 120) for _ in range(4)], color)
    if kind == "polygon":
        x, y = _grid(rng, 8, 80), _grid(rng, 8, 80)
        w, h = _grid(rng, 24, 40), _grid(rng, 24, 40)
        return Shape(kind, [x + w // 2, y, x + w, y + h, x, y + h], color)
    return Shape(kind, [_grid(rng, 8, 56), _grid(rng, 24, 120)], color, rng.choice(TITLES))


def sample(rng: random.Random) -> list[Shape]:
    n = rng.randint(2, 4)
    kinds = [rng.choice(SHAPES[:4]) for _ in range(n)]
    if rng.random() < 0.25:
        kinds[-1] = "text"
    colors = distinct(rng, COLORS, n)
    shapes = [_shape(rng, k, c) for k, c in zip(kinds, colors)]
    for s in shapes:  # a line needs length (120 - x differs from x on the 8 px grid)
        if s.kind == "line" and s.points[:2] == s.points[2:]:
            s.points[2] = 120 - s.points[0]
    return sorted(shapes, key=_reading_order)


def _reading_order(s: Shape) -> tuple[int, int]:
    """(top, left) of the shape's box: elements are written top to bottom, then left to right,
    so the picture, not a coin toss, decides which element comes first."""
    p = s.points
    if s.kind == "circle":
        return p[1] - p[2], p[0] - p[2]
    if s.kind == "text":
        return p[1] - 16, p[0]  # y is the baseline of a 16 px font
    if s.kind == "rect":
        return p[1], p[0]
    return min(p[1::2]), min(p[0::2])  # line, polygon: the smallest y and x of their points


def _element(s: Shape) -> str:
    p = s.points
    if s.kind == "rect":
        return f'<rect x="{p[0]}" y="{p[1]}" width="{p[2]}" height="{p[3]}" fill="{s.color}"/>'
    if s.kind == "circle":
        return f'<circle cx="{p[0]}" cy="{p[1]}" r="{p[2]}" fill="{s.color}"/>'
    if s.kind == "line":
        return f'<line x1="{p[0]}" y1="{p[1]}" x2="{p[2]}" y2="{p[3]}" stroke="{s.color}" stroke-width="4"/>'
    if s.kind == "polygon":
        pts = " ".join(f"{p[i]},{p[i + 1]}" for i in range(0, 6, 2))
        return f'<polygon points="{pts}" fill="{s.color}"/>'
    return f'<text x="{p[0]}" y="{p[1]}" font-size="16" fill="{s.color}">{s.text}</text>'


def write(shapes: list[Shape]) -> str:
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}">'
    return "\n".join([head, *(_element(s) for s in shapes), "</svg>"])


def apply_flaw(shapes: list[Shape], code: str, flaw: str, rng: random.Random) -> Optional[str]:
    """The code of `shapes` with one `flaw`, or None when that flaw does not apply."""
    shapes = copy.deepcopy(shapes)
    if flaw == "colour":
        s = rng.choice(shapes)
        s.color = other(rng, [c for c in COLORS if c not in {t.color for t in shapes}], s.color)
    elif flaw == "shift":
        s = rng.choice(shapes)
        axis = rng.randrange(2)  # move x or y by 16..32 px, the whole shape together
        delta = int(nudge(rng, 0, (16, 24, 32), -32, 32))
        coords = range(axis, len(s.points) if s.kind in ("line", "polygon") else 2, 2)
        for i in coords:
            s.points[i] += delta
    elif flaw == "missing":
        if len(shapes) < 2:
            return None
        shapes.pop(rng.randrange(len(shapes)))
    elif flaw == "syntax":
        return slip(rng, code, [("/>", ">"), ('" ', " "), ("<", ""), ('="', "=")])
    else:
        raise ValueError(f"unknown svg flaw {flaw!r}")
    return write(shapes)
