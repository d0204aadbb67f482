"""extract_code, the format reward and the composite reward."""

from __future__ import annotations

import pytest
import torch

from vinci.reward.format import RewardParts, composite_reward, extract_code, fenced_blocks, format_reward
from vinci.tasks import fence


def test_last_block_of_the_language_wins():
    text = (
        "Here:\n```python\nfirst()\n```\nthen\n```svg\n<svg/>\n```\n"
        "finally\n```python\nsecond()\n```\nDone."
    )
    assert extract_code(text, "python") == "second()"
    assert extract_code(text, "svg") == "<svg/>"
    assert extract_code(text, "html") is None


@pytest.mark.parametrize("tag", ["latex", "tikz", "tex", "LaTeX", "TIKZ"])
def test_latex_aliases(tag):
    text = f"```{tag}\n\\begin{{tikzpicture}}\\end{{tikzpicture}}\n```"
    assert extract_code(text, "latex") == "\\begin{tikzpicture}\\end{tikzpicture}"
    assert extract_code(text, "tikz") == extract_code(text, "latex")  # asking for tikz means latex


def test_python_aliases_and_info_string():
    assert extract_code("```py\nx = 1\n```", "python") == "x = 1"
    assert extract_code('```python title="plot.py"\nx = 2\n```', "python") == "x = 2"
    assert extract_code("```Python\r\nx = 3\r\n```\r\n", "python") == "x = 3"


def test_blocks_that_do_not_count():
    assert extract_code("```\nx = 1\n```", "python") is None  # untagged
    assert extract_code("```xml\n<svg/>\n```", "svg") is None  # another language
    assert extract_code("```python\nx = 1\n", "python") is None  # unclosed (truncated answer)
    assert extract_code("no code at all", "python") is None
    assert extract_code("inline ```python x``` only", "python") is None
    # a truncated last block hides nothing after it, but earlier closed blocks still count
    assert extract_code("```python\nok()\n```\n```python\ncut(", "python") == "ok()"


def test_longer_fences_nest_shorter_ones():
    text = "````markdown\nExample:\n```python\nnot_the_answer()\n```\n````\n```python\nanswer()\n```"
    assert extract_code(text, "python") == "answer()"
    assert [lang for lang, _ in fenced_blocks(text)] == [None, "python"]  # markdown is no target language
    assert extract_code("````python\nx = '```'\n```\ny = 1\n````", "python") == "x = '```'\n```\ny = 1"


def test_round_trip_with_the_task_fence():
    for language in ("python", "svg", "html", "latex", "tikz"):
        assert extract_code("Sure.\n" + fence("  code\n", language) + "\n", language) == "code"


def test_format_reward():
    texts = ["```python\nx = 1\n```", "```python\n\n```", "x = 1"]
    texts += ["```tikz\n\\draw;\n```", "```svg\n<svg/>\n```"]
    languages = ["python", "python", "python", "latex", "html"]
    assert format_reward(texts, languages).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert extract_code(texts[1], "python") == ""  # an empty block exists but earns no format reward
    with pytest.raises(ValueError):
        format_reward(texts, languages[:2])
    with pytest.raises(ValueError, match="unknown language"):
        format_reward(["x"], ["cobol"])


def test_composite_reward():
    visual = torch.tensor([0.8, 0.9, 0.5, 0.0])
    fmt = torch.tensor([1.0, 0.0, 1.0, 0.0])
    rendered = torch.tensor([True, True, False, False])
    parts = composite_reward(visual, fmt, rendered)
    assert isinstance(parts, RewardParts)
    assert torch.allclose(parts.overall, torch.tensor([0.82, 0.81, 0.1, 0.0]))
    assert parts.visual.tolist() == [pytest.approx(0.8), pytest.approx(0.9), 0.0, 0.0]  # failed -> 0
    assert parts.rendered.dtype == torch.bool and parts.format.dtype == torch.float32
    means = parts.means()
    assert set(means) == {"overall", "visual", "format", "rendered"} and means["rendered"] == 0.5
    half = composite_reward(visual, fmt, rendered.float(), format_weight=0.5)
    assert torch.allclose(half.overall, torch.tensor([0.9, 0.45, 0.5, 0.0]))


def test_composite_reward_keeps_group_shape_and_checks_arguments():
    visual = torch.rand(2, 8)  # [B, G]
    parts = composite_reward(visual, torch.ones(2, 8), torch.ones(2, 8, dtype=torch.bool), format_weight=0.0)
    assert parts.overall.shape == (2, 8) and torch.allclose(parts.overall, visual)
    with pytest.raises(ValueError, match="format_weight"):
        composite_reward(visual, torch.ones(2, 8), torch.ones(2, 8), format_weight=1.5)
    with pytest.raises(ValueError, match="shape"):
        composite_reward(visual, torch.ones(16), torch.ones(2, 8))
