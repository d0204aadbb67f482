"""Call traces through a real RenderPool: what comes back for small programs whose calls,
colours, texts and layout are known, and that a hostile program can neither break the
parent nor send back an oversize or ill-typed trace."""

from __future__ import annotations

import pytest

from tests.render.conftest import assert_clean_and_serving
from vinci.render import RenderJob
from vinci.render.trace import MAX_TEXT_CHARS, MAX_TEXTS, clean_trace

TWO_PANELS = """
import matplotlib.pyplot as plt
fig, (ax, bx) = plt.subplots(1, 2, figsize=(6, 3))
ax.hist([1, 2, 2, 3, 3, 3], bins=3, color="#ff0000")
ax.set_title("Counts")
bx.plot([0, 1, 2], [2, 0, 1], color="#00ff00", label="line")
bx.scatter([0, 1], [1, 2], c=["#0000ff", "black"])
bx.set_xlabel("x axis")
bx.set_xticks([0, 1, 2], ["zero", "one", "two"])
bx.legend()
ax.text(1.5, 2, "note")
fig.suptitle("Both")
plt.savefig("out.pdf")
"""


def traced(pool, code: str, timeout: float = 20.0):
    result = pool.render_many([RenderJob("python", code, timeout=timeout, trace=True)])[0]
    assert result.ok, result.error
    return result


def test_calls_colours_texts_and_layout_of_two_panels(pool):
    trace = traced(pool, TWO_PANELS).trace
    assert trace["calls"] == [
        {"type": "hist", "colors": ["#ff0000"] * 3},  # outermost only: hist, not its three bars
        {"type": "plot", "colors": ["#00ff00"]},
        {"type": "scatter", "colors": ["#0000ff", "#000000"]},
    ]
    for text in ("Counts", "x axis", "line", "note", "Both", "zero", "one", "two"):
        assert trace["texts"].count(text) == 1, text
    assert all(text.strip() for text in trace["texts"])
    assert trace["layout"] == [[1, 2, 0, 1, 0, 1], [1, 2, 0, 1, 1, 2]]


def test_projections_spans_colorbars_twins_and_insets(pool):
    code = """
import numpy as np
import matplotlib.pyplot as plt
fig = plt.figure(figsize=(6, 6))
grid = fig.add_gridspec(2, 2)
polar = fig.add_subplot(grid[0, 0], projection="polar")
polar.plot([0, 1], [1, 2], color="red")
cube = fig.add_subplot(grid[0, 1], projection="3d")
cube.bar3d([0], [0], [0], 1, 1, 1, color="blue", shade=False)
wide = fig.add_subplot(grid[1, :])
image = wide.imshow(np.arange(6).reshape(2, 3), cmap="gray")
fig.colorbar(image, ax=wide)
wide.twinx().plot([0, 2], [0, 1], color="#123456")
inset = fig.add_axes([0.45, 0.12, 0.1, 0.1])
inset.pie([1, 3], colors=["#111111", "#222222"])
plt.savefig("out.png")
"""
    trace = traced(pool, code).trace
    types = [call["type"] for call in trace["calls"]]
    assert types == ["polar:plot", "3d:bar3d", "imshow", "plot", "pie"]  # no colorbar pcolormesh
    calls = dict(zip(types, [call["colors"] for call in trace["calls"]]))
    assert calls["polar:plot"] == ["#ff0000"]
    assert set(calls["3d:bar3d"]) == {"#0000ff"} and len(calls["3d:bar3d"]) == 6  # one per face
    assert calls["imshow"][0] == "#000000" and calls["imshow"][-1] == "#ffffff"  # the gray colormap
    assert calls["plot"] == ["#123456"] and calls["pie"] == ["#111111", "#222222"]
    # colorbar, twin and inset add no cell; the colorbar leaves its host in the spanning cell
    assert trace["layout"] == [[2, 2, 0, 1, 0, 1], [2, 2, 0, 1, 1, 2], [2, 2, 1, 2, 0, 2]]


def test_trace_reflects_the_figure_as_captured(pool):
    code = """
import matplotlib.pyplot as plt
first = plt.figure()
plt.bar([0, 1], [1, 2])
second = plt.figure()
bars = plt.bar([0, 1], [2, 1], color="red")
for bar in bars:
    bar.set_color("#abcdef")  # recoloured after the call: the drawn colour counts
gone = plt.plot([0, 1], [0, 1], color="green")[0]
gone.remove()
plt.ylabel("")
plt.savefig(second)
"""
    trace = traced(pool, code).trace
    assert trace["calls"] == [{"type": "bar", "colors": ["#abcdef", "#abcdef"]}]  # not the first figure's
    assert "" not in trace["texts"]


def test_no_trace_unless_asked_and_only_for_python(pool):
    results = pool.render_many(
        [
            RenderJob("python", TWO_PANELS),
            RenderJob("svg", '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', trace=True),
            RenderJob("python", "raise ValueError('broken')", trace=True),
        ]
    )
    assert results[0].ok and results[0].trace is None
    assert results[1].ok and results[1].trace is None
    assert not results[2].ok and results[2].trace is None


def test_thousands_of_texts_are_capped_not_a_crash(pool):
    code = (
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.text(0.1, 0.1, 'y' * 400)\n"
        "for i in range(1000):\n"
        "    ax.text(0.5, 0.5, str(i))\n"
        "plt.savefig('out.png')\n"
    )
    trace = traced(pool, code, timeout=60).trace
    assert len(trace["texts"]) == MAX_TEXTS
    assert max(len(text) for text in trace["texts"]) == MAX_TEXT_CHARS
    assert_clean_and_serving(pool)


FORGE = """
import sys
import matplotlib.pyplot as plt
plt.plot([0, 1])
{patch}
plt.savefig("out.png")
"""


def test_forged_ill_typed_trace_is_cleaned_by_the_parent(pool):
    # the program replaces the job-side cleaner and sends whatever it likes
    patch = (
        "tracing = sys.modules['vinci.render.trace']\n"
        "tracing.clean_trace = lambda trace: {'calls': [{'type': 7}, {'type': 'bar', 'colors': ['red', '#00ff00', 3]}],"
        " 'texts': [1, None, 'ok'] + ['x'] * 50000, 'layout': [[1, 1, 0, 1, 0, 1], [True] * 6, 'grid'], 'extra': 1}\n"
    )
    trace = traced(pool, FORGE.format(patch=patch)).trace
    assert trace == clean_trace(trace)
    assert trace["calls"] == [{"type": "bar", "colors": ["#00ff00"]}]
    assert trace["texts"][0] == "ok" and len(trace["texts"]) == MAX_TEXTS
    assert trace["layout"] == [[1, 1, 0, 1, 0, 1]] and "extra" not in trace


def test_forged_oversize_trace_is_a_crash_not_a_broken_parent(pool):
    patch = "sys.modules['vinci.render.trace'].clean_trace = lambda trace: {'texts': ['x' * 1000] * 5000}\n"
    result = pool.render_many([RenderJob("python", FORGE.format(patch=patch), timeout=20, trace=True)])[0]
    assert result.kind == "crash" and "malformed" in result.error
    assert_clean_and_serving(pool)


def test_trace_forged_into_an_untraced_job_is_dropped(pool):
    patch = (
        "worker = sys.modules['__main__']  # the worker runs as `python -m vinci.render.worker`\n"
        "encode = worker.image_to_frame\n"
        "def forged(image):\n"
        "    header, payload = encode(image)\n"
        "    return {**header, 'trace': {'texts': ['forged']}}, payload\n"
        "worker.image_to_frame = forged\n"
    )
    result = pool.render_many([RenderJob("python", FORGE.format(patch=patch), timeout=20)])[0]
    assert result.ok and result.trace is None


@pytest.mark.parametrize(
    "patch",
    [
        "import matplotlib.figure\nmatplotlib.figure.Figure.findobj = lambda *a, **k: 1 / 0\n",
        "import matplotlib.lines\nmatplotlib.lines.Line2D.get_color = lambda self: 1 / 0\n",
    ],
)
def test_program_that_breaks_the_tracer_still_renders_without_a_trace(pool, patch):
    result = pool.render_many([RenderJob("python", FORGE.format(patch=patch), timeout=20, trace=True)])[0]
    assert result.ok and result.trace is None
