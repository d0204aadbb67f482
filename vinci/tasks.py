"""One table for the four target languages: fence tag, domain, prompt templates.

Everything that needs to know "what is a chart task" reads it from here, so adding a language
means adding one row. Renderers are looked up by the same canonical name in `vinci.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

# VinciCoder reads the target language off the prompt: the first of these names that occurs
# in it (in this priority order), python when none does. `tikz` is an alias of `latex`.
PROMPT_LANGUAGE_ORDER = ("svg", "html", "python", "latex", "tikz")
ALIASES = {"tikz": "latex", "py": "python", "matplotlib": "python", "tex": "latex"}


@dataclass(frozen=True)
class Task:
    language: str  # canonical name: python | svg | html | latex
    fence: str  # the tag after ``` that the answer must use
    domain: str  # what the image is: chart | icon | web | figure
    direct_prompt: str  # image -> code
    refine_prompt: str  # image + flawed code -> corrected code ({code} is filled in)


TASKS: dict[str, Task] = {
    "python": Task(
        "python",
        "python",
        "chart",
        "<image>Write the matplotlib python code that draws this chart.",
        "<image>This python code should draw the chart in the image but has flaws. "
        "Fix it.\n```python\n{code}\n```",
    ),
    "svg": Task(
        "svg",
        "svg",
        "icon",
        "<image>Write the svg code that draws this image.",
        "<image>This svg code should draw the image but has flaws. Fix it.\n```svg\n{code}\n```",
    ),
    "html": Task(
        "html",
        "html",
        "web",
        "<image>Write the html code of this web page.",
        "<image>This html code should draw the web page in the image but has flaws. "
        "Fix it.\n```html\n{code}\n```",
    ),
    "latex": Task(
        "latex",
        "latex",
        "figure",
        "<image>Write the latex tikz code that draws this figure.",
        "<image>This latex tikz code should draw the figure but has flaws. "
        "Fix it.\n```latex\n{code}\n```",
    ),
}
LANGUAGES = tuple(TASKS)


def canonical(language: str) -> str:
    """Map a language name or alias to its canonical name; ValueError when unknown."""
    name = language.strip().lower()
    name = ALIASES.get(name, name)
    if name not in TASKS:
        known = ", ".join(sorted(set(TASKS) | set(ALIASES)))
        raise ValueError(f"unknown language {language!r}; known: {known}")
    return name


def language_from_prompt(prompt: str) -> str:
    """The target language a prompt asks for, as VinciCoder decides it."""
    text = prompt.lower()
    for name in PROMPT_LANGUAGE_ORDER:
        if name in text:
            return canonical(name)
    return "python"


def fence(code: str, language: str) -> str:
    """Wrap code in the fenced block the format reward looks for."""
    return f"```{TASKS[canonical(language)].fence}\n{code.strip()}\n```"
