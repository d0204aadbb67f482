"""generate(): deterministic, distinct, well-formed programs whose flaws are real and varied."""

from __future__ import annotations

import ast
import random
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from vinci.data.synth import DOMAINS, generate
from vinci.data.synth.vocab import slip

N = 120


class _TagBalance(HTMLParser):
    VOID = {"br", "img", "meta", "link", "hr", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.ok = [], True

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        self.ok = self.ok and bool(self.stack) and self.stack.pop() == tag


def well_formed(language: str, code: str) -> bool:
    """A cheap static check that a program is syntactically whole (no renderer needed)."""
    if language == "python":
        try:
            ast.parse(code)
        except SyntaxError:
            return False
        return code.rstrip().endswith("plt.show()") and "savefig" not in code
    if language == "svg":
        try:
            return ET.fromstring(code).tag.endswith("svg")
        except ET.ParseError:
            return False
    if language == "html":
        parser = _TagBalance()
        parser.feed(code)
        quotes_ok = all(line.count('"') % 2 == 0 for line in code.splitlines())
        return parser.ok and not parser.stack and quotes_ok and bool(re.search(r"<\w", code))
    body = code.split("\\begin{tikzpicture}")[-1].split("\\end{tikzpicture}")[0]
    commands = [line for line in body.strip().splitlines()]
    return (code.count("{") == code.count("}") and code.startswith("\\documentclass")
            and code.rstrip().endswith("\\end{document}")
            and all(line.endswith(";") and line.startswith(("\\fill", "\\draw", "\\node")) for line in commands))


@pytest.mark.parametrize("language", sorted(DOMAINS))
def test_generate_is_deterministic_and_distinct(language):
    first, again = generate(language, N, seed=3), generate(language, N, seed=3)
    assert first == again
    assert len({p.code for p in first}) == N
    assert generate(language, N, seed=4) != first
    assert generate(language, 10, seed=3) == first[:10]  # a prefix does not depend on n


@pytest.mark.parametrize("language", sorted(DOMAINS))
def test_programs_are_compact_and_well_formed(language):
    for program in generate(language, N, seed=0):
        assert program.language == language
        assert 100 <= len(program.code) <= 600, program.code
        assert well_formed(language, program.code), program.code


@pytest.mark.parametrize("language", sorted(DOMAINS))
def test_flaws_are_varied_and_real(language):
    programs = generate(language, N, seed=0)
    assert {p.flaw for p in programs} == set(DOMAINS[language].FLAWS)
    assert all(p.flawed_code != p.code for p in programs)
    semantic = [p for p in programs if p.flaw != "syntax"]
    slips = [p for p in programs if p.flaw == "syntax"]
    # A wrong colour, shifted element, missing element or wrong chart type is still valid code
    # that draws the wrong picture; a syntax slip mostly breaks the program.
    assert all(well_formed(language, p.flawed_code) for p in semantic)
    broken = sum(not well_formed(language, p.flawed_code) for p in slips)
    assert broken >= 0.5 * len(slips), f"only {broken} of {len(slips)} syntax slips break the program"


def _svg_tops(code: str) -> list[tuple[float, float]]:
    """(top, left) of each element's box, from the written attributes."""
    tops = []
    for element in list(ET.fromstring(code)):
        a = {k: float(v) for k, v in element.attrib.items() if re.fullmatch(r"-?[\d.]+", v)}
        tag = element.tag.split("}")[-1]
        if tag == "circle":
            tops.append((a["cy"] - a["r"], a["cx"] - a["r"]))
        elif tag == "text":
            tops.append((a["y"] - 16, a["x"]))
        elif tag == "polygon":
            xy = [float(v) for v in re.split(r"[ ,]", element.attrib["points"])]
            tops.append((min(xy[1::2]), min(xy[0::2])))
        elif tag == "line":
            tops.append((min(a["y1"], a["y2"]), min(a["x1"], a["x2"])))
        else:
            tops.append((a["y"], a["x"]))
    return tops


def _tikz_tops(code: str) -> list[tuple[float, float]]:
    """(-top, left) of each command's box (TikZ's y points up)."""
    tops = []
    for line in code.splitlines():
        points = [tuple(map(float, p)) for p in re.findall(r"\((-?[\d.]+),(-?[\d.]+)\)", line)]
        if not points:
            continue
        if " circle (" in line:
            (x, y), r = points[0], float(re.search(r"circle \(([\d.]+)\)", line).group(1))
            tops.append((-(y + r), x - r))
        else:
            tops.append((-max(p[1] for p in points), min(p[0] for p in points)))
    return tops


@pytest.mark.parametrize("language, tops", [("svg", _svg_tops), ("latex", _tikz_tops)])
def test_elements_are_written_in_reading_order(language, tops):
    # Top to bottom, then left to right: which element comes first is read off the picture.
    programs = generate(language, N, seed=0)
    for program in programs:
        assert tops(program.code) == sorted(tops(program.code)), program.code
    assert sum(len(tops(p.code)) >= 3 for p in programs) > N // 3  # the check has orders to get wrong


def test_flaw_kinds_change_what_they_say():
    programs = {p.flaw: p for p in generate("python", N, seed=1)}
    colour = programs["colour"]
    colours = lambda code: re.findall(r'colors?="?\[?([^"\]]+)', code)  # noqa: E731
    assert colours(colour.code) != colours(colour.flawed_code)
    chart = programs["chart-type"]
    calls = lambda code: re.findall(r"plt\.(bar|plot|scatter)\(", code)  # noqa: E731
    assert calls(chart.code) and calls(chart.code) != calls(chart.flawed_code)
    missing = programs["missing"]
    assert len(missing.flawed_code.splitlines()) == len(missing.code.splitlines()) - 1


def test_languages_and_sizes():
    assert generate("tikz", 2, seed=0) == generate("latex", 2, seed=0)
    assert generate("svg", 0) == []
    with pytest.raises(ValueError, match="unknown language"):
        generate("cobol", 1)


def test_slip_edits_one_body_line():
    code = "head (a)\nbody (b)\ntail (c)"
    assert slip(random.Random(0), code, [(")", "")]) == "head (a)\nbody (b\ntail (c)"
    assert slip(random.Random(0), code, [("x", "y")]) is None
