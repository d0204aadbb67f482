"""Procedural matplotlib charts: bar, line, scatter and pie, in one canonical pyplot style.

A chart is a small `Chart` value (kind, x values, series, labels) written out as a short
script: ``import matplotlib.pyplot as plt``, an ``x`` list, one plotting call per series, the
optional title/axis labels/legend, and ``plt.show()``. No figure size or savefig: the renderer
owns the output size. Flaws edit the `Chart` (colour, one value, a dropped element, the
chart type) or the text (a syntax slip), so the flawed script differs in one place.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Optional

from vinci.data.synth.vocab import AXES, CATEGORIES, COLORS, WORDS, distinct, nudge, other, slip

KINDS = ("bar", "line", "scatter", "pie")
FLAWS = ("colour", "shift", "missing", "chart-type", "syntax")
LOW, HIGH = 1, 12  # data values are small integers


@dataclass
class Series:
    values: list[int]
    color: str
    label: str


@dataclass
class Chart:
    kind: str  # bar | line | scatter | pie
    x: list  # category names, or 1..n for scatter; slice labels for pie
    series: list[Series]  # pie: exactly one, whose values are the slices
    colors: list[str] = field(default_factory=list)  # pie slice colours
    title: Optional[str] = None
    xlabel: Optional[str] = None
    ylabel: Optional[str] = None
    legend: bool = False


def sample(rng: random.Random) -> Chart:
    kind = rng.choice(KINDS)
    names = distinct(rng, WORDS, 2)
    colors = distinct(rng, COLORS, 6)
    if kind == "pie":
        x = list(rng.choice(CATEGORIES)[: rng.randint(3, 4)])
        values = [rng.randint(2, 9) for _ in x]
        return Chart(kind, x, [Series(values, "", "")], colors[: len(x)], title=rng.choice(names))
    n_series = 1 if kind == "bar" else rng.randint(1, 2)
    if kind == "scatter":
        x = list(range(1, rng.randint(4, 7)))
    else:
        x = list(rng.choice(CATEGORIES)[: rng.randint(3, 6)])
    series = [Series([rng.randint(LOW, HIGH) for _ in x], colors[i], names[i]) for i in range(n_series)]
    labelled = rng.random() < 0.7
    return Chart(
        kind,
        x,
        series,
        title=rng.choice(names) if rng.random() < 0.8 else None,
        xlabel=rng.choice(AXES) if labelled else None,
        ylabel=rng.choice(AXES) if labelled else None,
        legend=n_series > 1 or rng.random() < 0.3,
    )


def _call(kind: str, s: Series, legend: bool) -> str:
    label = f', label="{s.label}"' if legend else ""
    if kind == "bar":
        return f'plt.bar(x, {json.dumps(s.values)}, color="{s.color}"{label})'
    if kind == "line":
        return f'plt.plot(x, {json.dumps(s.values)}, color="{s.color}", marker="o"{label})'
    return f'plt.scatter(x, {json.dumps(s.values)}, color="{s.color}"{label})'


def write(chart: Chart) -> str:
    lines = ["import matplotlib.pyplot as plt", ""]
    if chart.kind == "pie":
        s = chart.series[0]
        lines.append(f"plt.pie({json.dumps(s.values)}, labels={json.dumps(chart.x)}, "
                     f"colors={json.dumps(chart.colors)})")
    else:
        lines.append(f"x = {json.dumps(chart.x)}")
        lines += [_call(chart.kind, s, chart.legend) for s in chart.series]
    if chart.title:
        lines.append(f'plt.title("{chart.title}")')
    if chart.xlabel:
        lines.append(f'plt.xlabel("{chart.xlabel}")')
    if chart.ylabel:
        lines.append(f'plt.ylabel("{chart.ylabel}")')
    if chart.legend:
        lines.append("plt.legend()")
    lines.append("plt.show()")
    return "\n".join(lines)


def apply_flaw(chart: Chart, code: str, flaw: str, rng: random.Random) -> Optional[str]:
    """The code of `chart` with one `flaw`, or None when that flaw does not apply."""
    c = copy.deepcopy(chart)
    if flaw == "colour":
        if c.kind == "pie":
            i = rng.randrange(len(c.colors))
            c.colors[i] = other(rng, [k for k in COLORS if k not in c.colors], c.colors[i])
        else:
            s = rng.choice(c.series)
            s.color = other(rng, [k for k in COLORS if k not in {t.color for t in c.series}], s.color)
    elif flaw == "shift":
        s = rng.choice(c.series)
        i = rng.randrange(len(s.values))
        s.values[i] = int(nudge(rng, s.values[i], (3, 4, 5), LOW, HIGH))
    elif flaw == "missing":
        parts = [p for p in ("title", "xlabel", "ylabel") if getattr(c, p)]
        parts += ["legend"] if c.legend and len(c.series) == 1 else []
        parts += ["series"] if len(c.series) > 1 else []
        if not parts:
            return None
        part = rng.choice(parts)
        if part == "series":
            c.series.pop(rng.randrange(len(c.series)))
        elif part == "legend":
            c.legend = False
        else:
            setattr(c, part, None)
    elif flaw == "chart-type":
        if c.kind == "pie":
            return None
        targets = [k for k in ("bar", "line", "scatter") if k != c.kind and (k != "bar" or len(c.series) == 1)]
        c.kind = rng.choice(targets)
    elif flaw == "syntax":
        return slip(rng, code, [(")", ""), (", ", " "), ('"', ""), ("plt.", "plt,"), ("(", " ")])
    else:
        raise ValueError(f"unknown chart flaw {flaw!r}")
    return write(c)
