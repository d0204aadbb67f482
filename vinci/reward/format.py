"""The format (language-alignment) reward and the composite GRPO reward.

- `extract_code(text, language)`: the code of the last closed, fenced block whose tag names that
  language. Tags go through `vinci.tasks.canonical`, so ```tikz and ```tex count as latex and
  ```py as python, while an untagged block or another language's block never counts. A block
  that is not closed (a truncated answer) does not count either. A closing fence has at least as
  many backticks as its opening one and nothing after them, so a longer fence may hold a shorter
  one (a ```python example inside a ````markdown block is not a block of the answer).
- `format_reward`: 1 when `extract_code` finds non-blank code, else 0 (VinciCoder's format term).
- `composite_reward`: (1 - w) * visual + w * format with w = 0.1 as in VinciCoder; a failed render
  gets visual 0. It returns every part in a `RewardParts` so each can be logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from vinci.tasks import canonical

_OPEN = re.compile(r"^ {0,3}(`{3,})[ \t]*([^\s`]*)[^`]*$")
_CLOSE = re.compile(r"^ {0,3}(`{3,})[ \t]*$")


def _tag_language(tag: str) -> str | None:
    """The canonical language a fence tag names, None for no tag or an unknown one."""
    if not tag:
        return None
    try:
        return canonical(tag)
    except ValueError:
        return None


def fenced_blocks(text: str) -> list[tuple[str | None, str]]:
    """All closed fenced blocks as (canonical language or None, code), in order."""
    blocks: list[tuple[str | None, str]] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        width, language = len(opening.group(1)), _tag_language(opening.group(2))
        for j in range(i + 1, len(lines)):
            closing = _CLOSE.match(lines[j])
            if closing is not None and len(closing.group(1)) >= width:
                blocks.append((language, "\n".join(lines[i + 1 : j])))
                i = j + 1
                break
        else:
            break  # unclosed: the rest of the text is inside it, so no later block exists
    return blocks


def extract_code(text: str, language: str) -> str | None:
    """The code of the last closed fenced block tagged with `language` (aliases allowed), else None."""
    wanted = canonical(language)
    found = [code for lang, code in fenced_blocks(text) if lang == wanted]
    return found[-1] if found else None


def format_reward(texts: Sequence[str], languages: Sequence[str]) -> torch.Tensor:
    """1.0 where the answer holds a non-blank fenced block in its language, else 0.0. -> [N]"""
    if len(texts) != len(languages):
        raise ValueError(f"got {len(texts)} texts but {len(languages)} languages")
    values = []
    for text, language in zip(texts, languages):
        code = extract_code(text, language)
        values.append(float(code is not None and code.strip() != ""))
    return torch.tensor(values, dtype=torch.float32)  # [N]


@dataclass(frozen=True)
class RewardParts:
    """The reward of each rollout and its parts; all tensors share one shape ([N] or [B, G])."""

    overall: torch.Tensor  # (1 - w) * visual + w * format
    visual: torch.Tensor  # patch similarity in [0, 1]; 0 where the render failed
    format: torch.Tensor  # 1.0 when the answer has a fenced block in the asked language
    rendered: torch.Tensor  # bool: the program rendered to an image

    def means(self) -> dict[str, float]:
        """Batch means of every part, for scalar logging (rendered -> render success rate)."""
        return {f.name: getattr(self, f.name).float().mean().item() for f in fields(self)}


def composite_reward(
    visual: torch.Tensor,
    format: torch.Tensor,
    rendered: torch.Tensor,
    format_weight: float = 0.1,
) -> RewardParts:
    """VinciCoder's reward (1 - w) * visual + w * format; visual counts only where rendered."""
    if not 0.0 <= format_weight <= 1.0:
        raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
    if not (visual.shape == format.shape == rendered.shape):
        raise ValueError(
            f"shape mismatch: visual {tuple(visual.shape)}, format {tuple(format.shape)}, "
            f"rendered {tuple(rendered.shape)}"
        )
    rendered = rendered.to(device=visual.device, dtype=torch.bool)  # [N]
    visual = torch.where(rendered, visual.float(), torch.zeros_like(visual, dtype=torch.float32))  # [N]
    format = format.to(device=visual.device, dtype=torch.float32)  # [N]
    overall = (1.0 - format_weight) * visual + format_weight * format  # [N]
    return RewardParts(overall=overall, visual=visual, format=format, rendered=rendered)
