"""LaTeX/TikZ rendering with pdflatex + pdftoppm, and its hostile inputs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.render.conftest import assert_clean_and_serving
from vinci.render import RenderJob, RenderOptions
from vinci.render.latex import make_document

CIRCLE = r"\begin{tikzpicture}\draw[fill=red] (0,0) circle (1cm);\end{tikzpicture}"


@pytest.fixture(autouse=True)
def _tex_installed():
    require_tool("pdflatex", "pdftoppm", "pdfinfo")


def test_snippet_is_wrapped_in_standalone_preamble():
    document = make_document("\\usetikzlibrary{matrix}\n" + CIRCLE)
    assert document.startswith("\\documentclass[tikz")
    assert document.index("\\usetikzlibrary{matrix}") < document.index("\\begin{document}")
    assert make_document("\\documentclass[11pt]{article}\n\\begin{document}x\\end{document}").startswith(
        "\\documentclass[border=5pt,varwidth=50cm]{standalone}"
    )


def test_tikz_snippet_renders_on_white(pool):
    result = pool.render("tikz", CIRCLE)
    assert result.ok, result.error
    assert result.language == "latex" and result.image.mode == "RGB"
    width, height = result.image.size
    assert abs(width - height) <= 2 and 120 < width < 160  # 2 cm + 2*5 pt border at 150 dpi
    assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_dpi_option_scales_the_page(pool):
    low, high = pool.render_many(
        [RenderJob("latex", CIRCLE, options=RenderOptions(latex_dpi=75)), RenderJob("latex", CIRCLE, options=RenderOptions(latex_dpi=300))]
    )
    assert low.ok and high.ok
    assert abs(high.image.width - 4 * low.image.width) <= 4


def test_write18_runs_nothing(pool):
    name = f"/tmp/vinci-write18-{uuid.uuid4().hex}"
    code = "\\immediate\\write18{touch " + name + "}\n" + CIRCLE
    result = pool.render("latex", code, timeout=10)
    assert result.ok, result.error  # shell escape is off: the write is only logged
    assert not Path(name).exists()
    assert_clean_and_serving(pool, "latex")


def test_input_outside_the_job_is_denied(pool):
    result = pool.render("latex", "\\documentclass{article}\\begin{document}\\input{/etc/passwd}\\end{document}")
    assert not result.ok and result.kind == "crash"
    assert "denied" in result.error and "/etc/passwd" in result.error
    assert_clean_and_serving(pool, "latex")


@pytest.mark.parametrize("target", ["/tmp/vinci-openout-{}.tex", "../vinci-openout-{}.tex"])
def test_openout_outside_the_job_is_denied(pool, target):
    target = target.format(uuid.uuid4().hex)
    code = (
        "\\documentclass{article}\\newwrite\\f\\begin{document}"
        f"\\immediate\\openout\\f={target}\\immediate\\write\\f{{owned}}\\immediate\\closeout\\f x\\end{{document}}"
    )
    result = pool.render("latex", code)
    assert not result.ok and "denied" in result.error
    assert not Path(target).exists() and not Path("/tmp", Path(target).name).exists()
    assert_clean_and_serving(pool, "latex")


def test_endless_macro_times_out(pool):
    started = time.monotonic()
    result = pool.render("latex", "\\def\\x{\\x}\\x", timeout=3)
    assert time.monotonic() - started < 6
    assert not result.ok and result.kind == "timeout"
    assert_clean_and_serving(pool, "latex")


def test_missing_package_is_a_clear_error(pool):
    result = pool.render("latex", "\\usepackage{vinci-no-such-package}\n" + CIRCLE)
    assert not result.ok and result.kind == "crash"
    assert "vinci-no-such-package.sty" in result.error and "not found" in result.error
    assert_clean_and_serving(pool, "latex")
