"""Procedural HTML pages: a coloured header, a row of coloured boxes, an optional line of text.

One canonical style for a 320x240 viewport: inline ``style`` attributes only (no stylesheet),
properties in a fixed order, sizes on a 20 px grid. Flaws change one colour or one box size,
drop one part, or slip the markup (an unclosed quote or tag, a missing ``;``).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Optional

from vinci.data.synth.vocab import COLORS, PHRASES, TITLES, distinct, nudge, other, slip

FLAWS = ("colour", "shift", "missing", "syntax")


@dataclass
class Box:
    width: int
    height: int
    color: str


@dataclass
class Page:
    title: Optional[str]  # header text, None for no header
    header: str  # header background colour
    boxes: list[Box]
    text: Optional[str]  # paragraph under the boxes, None for none
    text_color: str


def sample(rng: random.Random) -> Page:
    n = rng.randint(2, 4)
    colors = distinct(rng, [c for c in COLORS if c != "black"], n + 1)
    boxes = [Box(20 * rng.randint(2, 4), 20 * rng.randint(2, 4), c) for c in colors[1:]]
    return Page(
        title=" ".join(distinct(rng, TITLES, rng.randint(1, 2))) if rng.random() < 0.85 else None,
        header=colors[0],
        boxes=boxes,
        text=rng.choice(PHRASES) if rng.random() < 0.6 else None,
        text_color=rng.choice(("black", "gray", colors[0])),
    )


def write(page: Page) -> str:
    lines = ['<html><body style="margin:0">']
    if page.title:
        lines.append(f'<h1 style="margin:0;padding:8px;background:{page.header};color:white;'
                     f'font-size:24px">{page.title}</h1>')
    lines.append('<div style="display:flex;gap:8px;padding:8px">')
    lines += [f'<div style="width:{b.width}px;height:{b.height}px;background:{b.color}"></div>'
              for b in page.boxes]
    lines.append("</div>")
    if page.text:
        lines.append(f'<p style="margin:8px;color:{page.text_color}">{page.text}</p>')
    lines.append("</body></html>")
    return "\n".join(lines)


def apply_flaw(page: Page, code: str, flaw: str, rng: random.Random) -> Optional[str]:
    """The code of `page` with one `flaw`, or None when that flaw does not apply."""
    page = copy.deepcopy(page)
    used = {page.header, *(b.color for b in page.boxes)}
    if flaw == "colour":
        spare = [c for c in COLORS if c not in used and c != "black"]
        targets = ["box"] + (["header"] if page.title else [])
        if rng.choice(targets) == "header":
            page.header = rng.choice(spare)
        else:
            box = rng.choice(page.boxes)
            box.color = other(rng, spare, box.color)
    elif flaw == "shift":
        box = rng.choice(page.boxes)
        side = rng.choice(("width", "height"))
        setattr(box, side, int(nudge(rng, getattr(box, side), (20, 40), 20, 100)))
    elif flaw == "missing":
        parts = (["title"] if page.title else []) + (["text"] if page.text else [])
        parts += ["box"] if len(page.boxes) > 1 else []
        part = rng.choice(parts)
        if part == "box":
            page.boxes.pop(rng.randrange(len(page.boxes)))
        else:
            setattr(page, part, None)
    elif flaw == "syntax":
        return slip(rng, code, [('">', ">"), (";", " "), ("</div>", ""), ('="', "=")])
    else:
        raise ValueError(f"unknown html flaw {flaw!r}")
    return write(page)
