"""Which language a row asks for, and whether vinci can render what it asks for.

VinciCoder's reward reads the language off the prompt: the first of ``svg, html, python,
latex, mermaid, tikz`` that occurs in the lower-cased prompt, python when none does. vinci
does the same (`prompt_language`), with the names it cannot render (VinciCoder's data also
asks for mermaid) kept in the list so such a prompt is not mistaken for python: it becomes a
bad row "unrenderable language", or renders once `vinci.tasks` gains a task of that name.

Python answers that draw with a library vinci's renderer cannot run are bad rows too, by
name, so a corpus's count of them shows up in the skip summary instead of as reward 0:
- a library the renderer blocks (`vinci.render.python.UNSUPPORTED`: plotly, kaleido, bokeh,
  altair) is "unsupported library";
- rdkit (VinciCoder's reward special-cases it) is "library not installed" when it is not
  importable here. When it is installed the row is kept.
Simplification: a library is seen by an ``import``/``from`` line in the answer, or by its name
in the prompt; code that imports it indirectly is not caught.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from typing import Optional

from vinci import tasks
from vinci.render.python import UNSUPPORTED

PROMPT_ORDER = ("svg", "html", "python", "latex", "mermaid", "tikz")  # VinciCoder's extract_code_names
NEEDS_INSTALL = ("rdkit",)  # drawn by python answers only when installed
LIBRARIES = tuple(UNSUPPORTED) + NEEDS_INSTALL
IMPORT = re.compile(r"^\s*(?:import|from)\s+(" + "|".join(LIBRARIES) + r")\b", re.MULTILINE)


class LanguageError(ValueError):
    """The row asks for something vinci cannot render; `reason` is the skip category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _renderable(name: str) -> str:
    try:
        return tasks.canonical(name)
    except ValueError:
        raise LanguageError("unrenderable language",
                            f"asks for {name}; vinci renders {', '.join(tasks.LANGUAGES)}") from None


def prompt_language(prompt: str) -> str:
    """The canonical language the prompt asks for (python when it names none)."""
    text = prompt.lower()
    for name in PROMPT_ORDER:
        if name in text:
            return _renderable(name)
    return "python"


def explicit_language(value: str) -> str:
    """A ``language`` column's value, canonical; "unrenderable" for a known-but-unrendered name."""
    if value.strip().lower() in PROMPT_ORDER:
        return _renderable(value.strip().lower())
    try:
        return tasks.canonical(value)
    except ValueError as err:
        raise LanguageError("unknown language", str(err)) from None


@lru_cache(maxsize=None)
def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_library(prompt: str, answer: Optional[str]) -> None:
    """LanguageError when a python row draws with a library the renderer cannot run here."""
    names = set(IMPORT.findall(answer or ""))
    lowered = prompt.lower()
    names |= {name for name in LIBRARIES if name in lowered}
    for name in sorted(names):
        if name in UNSUPPORTED:
            raise LanguageError("unsupported library",
                                f"draws with {name}, which vinci's python renderer does not run (matplotlib only)")
        if not installed(name):
            raise LanguageError("library not installed", f"draws with {name}, which is not installed (pip install {name})")
