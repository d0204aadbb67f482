"""`generate`: n distinct procedural programs of one language, each with a flawed twin.

The flaw is chosen per program among the domain's flaw kinds (colour, shift, missing,
chart-type for charts, syntax); no rendering happens here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import ModuleType

from vinci import tasks
from vinci.data.synth import charts, html, svg, tikz

DOMAINS: dict[str, ModuleType] = {"python": charts, "svg": svg, "html": html, "latex": tikz}
MAX_TRIES = 50  # samples per requested program before giving up on uniqueness


@dataclass(frozen=True)
class Program:
    language: str  # canonical: python | svg | html | latex
    code: str  # the correct program
    flawed_code: str  # the same program with one flaw, never equal to `code`
    flaw: str  # colour | shift | missing | chart-type | syntax


def generate(language: str, n: int, seed: int = 0) -> list[Program]:
    """n distinct programs of `language` (the same list for the same seed, on any machine)."""
    language = tasks.canonical(language)
    domain = DOMAINS[language]
    rng = random.Random(f"vinci-synth:{language}:{seed}")  # str seeds hash with sha512: stable
    programs: list[Program] = []
    seen: set[str] = set()
    for _ in range(MAX_TRIES * max(n, 1)):
        if len(programs) == n:
            return programs
        scene = domain.sample(rng)
        code = domain.write(scene)
        if code in seen:
            continue
        seen.add(code)
        for flaw in rng.sample(domain.FLAWS, len(domain.FLAWS)):
            flawed = domain.apply_flaw(scene, code, flaw, rng)
            if flawed is not None and flawed != code:
                programs.append(Program(language, code, flawed, flaw))
                break
    if len(programs) < n:
        raise ValueError(f"only {len(programs)} distinct {language} programs after "
                         f"{MAX_TRIES * n} samples; asked for {n}")
    return programs

