"""Python/matplotlib rendering: every way a program can produce its figure is captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.render.conftest import TINY_CHART
from vinci.render import RenderOptions, render
from vinci.render.options import RenderJob

SEEDED = """
import numpy as np
import matplotlib.pyplot as plt
np.random.seed(3)
fig, ax = plt.subplots(figsize=(4, 3))
ax.scatter(np.random.rand(50), np.random.rand(50), c=np.random.rand(50))
ax.set_title(str({"b", "a", "c"}))  # set order depends on the hash seed
plt.savefig("out.pdf", bbox_inches="tight")
"""


def test_savefig_to_pdf_path_is_captured(pool):
    code = "import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3))\nplt.plot([1, 2])\nplt.savefig('chart.pdf')"
    result = pool.render("python", code)
    assert result.ok, result.error
    assert result.image.mode == "RGB" and result.image.size == (400, 300)  # 100 dpi default


def test_figure_savefig_to_buffer_in_svg_format_is_captured(pool):
    code = (
        "import io\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2))\n"
        "ax.bar([0, 1], [1, 2], color='red')\nfig.savefig(io.BytesIO(), format='svg')\nplt.close(fig)"
    )
    result = pool.render("python", code)
    assert result.ok, result.error
    pixels = np.asarray(result.image)
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 50)).any()  # the red bars are there


def test_show_is_captured(pool):
    result = pool.render("python", TINY_CHART + "plt.show()\n")
    assert result.ok and result.image.size == (640, 480)


def test_program_that_never_saves_still_renders(pool):
    result = pool.render("python", TINY_CHART)
    assert result.ok and result.image.size == (640, 480)


def test_last_capture_wins(pool):
    code = TINY_CHART + "plt.savefig('a.png')\nplt.gcf().set_size_inches(3, 2)\nplt.savefig('b.png')\n"
    result = pool.render("python", code)
    assert result.ok and result.image.size == (300, 200)


def test_dpi_option_and_transparency_on_white(pool):
    code = (
        "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(4, 3))\n"
        "plt.plot([0, 1])\nplt.savefig('x.png', dpi=300, transparent=True)"
    )
    options = RenderOptions(python_dpi=50)
    (result,) = pool.render_many([RenderJob("python", code, options=options)])
    assert result.ok and result.image.size == (200, 150)  # the program's dpi=300 is ignored
    assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_legacy_cm_get_cmap_gives_the_resampled_colormap(pool):
    # matplotlib 3.9 removed cm.get_cmap(name, lut); older chart code (HR_2 in the corpus) uses it
    code = (
        "import matplotlib.pyplot as plt\nfrom matplotlib import cm\nfig, ax = plt.subplots(figsize=(2, 1))\n"
        "cmap = cm.get_cmap('jet', 2)\n"
        "ax.bar([0, 1], [1, 1], width=1.0, color=[cmap(0), cmap(1)])\nax.axis('off')\n"
        "ax.set_xlim(-0.5, 1.5)\nax.set_ylim(0, 1)\nfig.subplots_adjust(0, 0, 1, 1)\n"
    )
    result = pool.render("python", code)
    assert result.ok, result.error
    pixels = np.asarray(result.image).astype(int)  # [100, 200, 3]
    assert np.abs(pixels[50, 40] - [0, 0, 127]).max() <= 2  # jet with 2 colours: its two ends
    assert np.abs(pixels[50, 160] - [127, 0, 0]).max() <= 2
    wrong = pool.render("python", "from matplotlib import cm\ncm.get_cmap('no-such-map')\n")
    assert wrong.kind == "crash" and "no-such-map" in wrong.error


def test_legacy_get_cmap_is_gone_again_after_the_program():
    import matplotlib.cm as cm

    from vinci.render.python import legacy_get_cmap

    before = hasattr(cm, "get_cmap")
    with legacy_get_cmap():
        assert cm.get_cmap("viridis", 3).N == 3
    assert hasattr(cm, "get_cmap") == before


def test_syntax_error_names_the_line(pool):
    result = pool.render("python", "import matplotlib.pyplot as plt\nplt.plot([1, 2]\n")
    assert not result.ok and result.kind == "syntax"
    assert "line" in result.error


def test_runtime_error_is_a_crash_with_the_exception(pool):
    result = pool.render("python", "import matplotlib.pyplot as plt\nplt.plot(undefined_name)\n")
    assert not result.ok and result.kind == "crash"
    assert "NameError" in result.error and "line 2" in result.error


def test_plotly_is_unsupported_with_a_clear_error(pool):
    code = "import plotly.express as px\nfig = px.line(x=[1, 2], y=[1, 2])\nfig.write_image('a.png')"
    result = pool.render("python", code)
    assert not result.ok and result.kind == "unsupported"
    assert "plotly" in result.error and "matplotlib" in result.error


def test_same_program_gives_identical_pixels_in_pool_and_fresh_process(pool, tmp_path):
    first, second = pool.render_many([RenderJob("python", SEEDED), RenderJob("python", SEEDED)])
    assert first.ok and second.ok
    assert first.image.tobytes() == second.image.tobytes()
    script = (
        "import sys\nfrom vinci.render.python import render_python\nfrom vinci.render.options import RenderOptions\n"
        "render_python(sys.stdin.read(), RenderOptions()).save(sys.argv[1])"
    )
    out = tmp_path / "naive.png"
    repo = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "PYTHONPATH": repo}
    subprocess.run([sys.executable, "-c", script, str(out)], input=SEEDED, text=True, check=True, env=env, cwd=tmp_path)
    from PIL import Image

    naive = Image.open(out).convert("RGB")
    assert naive.size == first.image.size and naive.tobytes() == first.image.tobytes()


def test_one_off_render_and_unknown_language():
    result = render("python", TINY_CHART, timeout=20)
    assert result.ok and result.language == "python" and result.seconds > 0
    with pytest.raises(ValueError, match="unknown language"):
        render("cobol", "DISPLAY 'HI'.")
