"""Real inputs from ../shared/corpora: every domain renders, charts match their references.

Charts: every ChartMimic script that plain `python` runs cleanly must render, and its render
must match the reference PNG closely (small thumbnail distance, and the nearest of all
references). SVG icons and TikZ figures all render except TikZ files needing packages that
are not installed; a sample of Design2Code pages renders without hanging on their remote
resources (there is no network). `benchmarks/render_throughput.py` renders every page.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import FULL_CORPORA, require_tool
from vinci.render import RenderJob

THUMB = (48, 48)
MAX_CHART_DISTANCE = 0.05  # mean |RGB difference| of 48x48 thumbnails, in [0, 1]; measured <= 0.03


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize(THUMB, Image.BOX), dtype=np.float64) / 255.0


def plain_python_fails(script, tmp_path) -> bool:
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    return run.returncode != 0


def test_chart_scripts_render_and_match_their_references(pool, corpora, tmp_path):
    scripts = sorted((corpora / "chart").glob("*.py"))
    assert len(scripts) >= (50 if FULL_CORPORA else 20)
    results = pool.render_many([RenderJob("python", s.read_text(), timeout=60) for s in scripts])
    failed = [(s, r) for s, r in zip(scripts, results) if not r.ok]
    for script, result in failed:  # only programs that are broken on their own may fail
        assert result.kind == "crash", f"{script.name}: {result.kind}: {result.error}"
        assert plain_python_fails(script, tmp_path), f"{script.name} runs under plain python: {result.error}"
    assert len(failed) <= len(scripts) // 10
    assert "HR_2.py" not in [s.name for s, _ in failed]  # cm.get_cmap(name, lut), gone since matplotlib 3.9
    references = [thumbnail(Image.open(s.with_suffix(".png"))) for s in scripts]
    for index, (script, result) in enumerate(zip(scripts, results)):
        if not result.ok:
            continue
        reference = Image.open(script.with_suffix(".png"))
        assert abs(result.image.width - reference.width) <= 0.05 * reference.width, script.name
        assert abs(result.image.height - reference.height) <= 0.05 * reference.height, script.name
        distances = [np.abs(thumbnail(result.image) - ref).mean() for ref in references]
        assert distances[index] < MAX_CHART_DISTANCE, f"{script.name}: {distances[index]:.3f}"
        assert int(np.argmin(distances)) == index, f"{script.name} looks more like {scripts[int(np.argmin(distances))].name}"


def test_every_svg_icon_renders(pool, corpora):
    icons = sorted((corpora / "svg").glob("*.svg"))
    assert len(icons) >= (500 if FULL_CORPORA else 40)
    results = pool.render_many([RenderJob("svg", icon.read_text()) for icon in icons])
    assert [icon.name for icon, r in zip(icons, results) if not r.ok] == []
    blank = [icon.name for icon, r in zip(icons, results) if np.asarray(r.image).min() > 200]
    assert blank == []  # every icon draws something dark on white


def test_tikz_figures_render_unless_a_package_is_missing(pool, corpora):
    require_tool("pdflatex", "pdftoppm")
    figures = sorted((corpora / "tikz").glob("*.tex"))
    results = pool.render_many([RenderJob("latex", f.read_text(), timeout=60) for f in figures])
    for figure, result in zip(figures, results):
        if not result.ok:
            assert "not found" in result.error, f"{figure.name}: {result.kind}: {result.error}"
    assert sum(r.ok for r in results) >= 0.8 * len(figures)
    for result in results:
        if result.ok:
            assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_sample_of_real_web_pages_render_without_network(pool, corpora):
    require_tool("chromium", "chromedriver")
    pages = sorted((corpora / "html").glob("*.html"))[:: 6 if FULL_CORPORA else 3]  # a sample keeps the test short
    results = pool.render_many([RenderJob("html", p.read_text(errors="replace"), timeout=20) for p in pages])
    assert [(p.name, r.error) for p, r in zip(pages, results) if not r.ok] == []
    for page, result in zip(pages, results):
        assert result.image.width == 1280 and 720 <= result.image.height <= 4096, page.name
        assert result.seconds < 20, page.name
