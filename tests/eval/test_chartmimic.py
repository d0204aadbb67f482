"""ChartMimic's low-level scores, pinned definition by definition: the scoring maths on
hand-written lists, then small hand-built charts traced by vinci's recorder (in this process,
through `render_python`, as the sandboxed job does it) so that each rule of what ChartMimic
sees is checked on a real matplotlib figure."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vinci.eval.chartmimic import (
    SCORE_KEYS,
    chartmimic_scores,
    ciede2000,
    color_f1,
    hex_to_lab,
    multiset_f1,
    matched_f1,
    similarity,
    thin,
    thinnings,
)
from vinci.render.options import RenderOptions
from vinci.render.python import render_python
from vinci.render.trace import CallTracer, clean_trace

# Sharma, Wu & Dalal (2005), Table 1: (Lab 1, Lab 2, ΔE2000), pairs 1, 2, 3, 7, 12, 13, 15,
# 17, 18, 25, 33 (the hue-wrap and zero-chroma pairs included).
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 2.8361, -74.0200), (50.0, 0.0, -82.7485), 3.4412),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def chartmimic_part(code: str) -> dict:
    tracer = CallTracer()
    render_python("import matplotlib\nmatplotlib.use('Agg')\n" + code, RenderOptions(), tracer)
    assert tracer.trace is not None, tracer.error
    return clean_trace(tracer.trace)["chartmimic"]


# ----------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA)
def test_ciede2000_matches_sharmas_published_pairs(lab1, lab2, expected):
    value = ciede2000(np.array([lab1]), np.array([lab2]))[0, 0]
    assert value == pytest.approx(expected, abs=1e-4)
    assert ciede2000(np.array([lab2]), np.array([lab1]))[0, 0] == pytest.approx(expected, abs=1e-4)


def test_lab_of_known_srgb_colours():
    lab = hex_to_lab(["#000000", "#ffffff", "#ff0000", "#1f77b4cc"])  # alpha ignored
    assert lab[0] == pytest.approx([0, 0, 0], abs=1e-6)
    assert lab[1] == pytest.approx([100, 0, 0], abs=1e-2)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    assert lab[3] == pytest.approx(hex_to_lab(["#1F77B4"])[0])


def test_similarity_is_one_minus_ciede2000_over_100_and_names_by_equality():
    sim = similarity(["#000000", "#FF0000", "Greys", "Blues"], ["#FFFFFF", "#FF0000", "Greys", "#000000"])
    assert sim[0, 0] == pytest.approx(0.0, abs=1e-3)  # ΔE2000 black-white is 100
    assert sim[1, 1] == 1.0 and sim[2, 2] == 1.0
    assert sim[3, 2] == 0.0  # Blues against Greys: different names, nothing alike
    assert sim[2, 0] == sim[0, 2] == sim[2, 3] == 0.0  # a name against a colour
    red_orange = ciede2000(hex_to_lab(["#FF0000"]), hex_to_lab(["#FF8000"]))[0, 0]
    assert similarity(["#FF0000"], ["#FF8000"])[0, 0] == pytest.approx(1 - red_orange / 100)


def test_colours_match_only_within_the_same_drawing_function():
    ref = [("bar", "#FF0000"), ("line", "#0000FF")]
    assert color_f1([("scatter", "#FF0000"), ("scatter", "#0000FF")], ref) == 0.0
    assert color_f1([("bar", "#FF0000"), ("scatter", "#0000FF")], ref) == pytest.approx(0.5)
    assert color_f1(ref, ref) == 1.0


def test_colour_matching_is_optimal_per_function():
    pred, ref = [("bar", "#000000"), ("bar", "#919191")], [("bar", "#777777"), ("bar", "#FFFFFF")]
    sim = similarity(["#000000", "#919191"], ["#777777", "#FFFFFF"])
    best = max(sim[0, 0] + sim[1, 1], sim[0, 1] + sim[1, 0])
    assert color_f1(pred, ref) == pytest.approx(best / 2)  # P = R = S/2


def test_long_colour_lists_are_thinned_greedily_in_order():
    greys = [("bar", f"#{v:02X}{v:02X}{v:02X}") for v in range(0, 240, 20)]  # 12 entries
    kept = thin(greys)
    assert kept[0] == greys[0] and len(kept) < len(greys)
    lists = [c for _, c in kept]
    assert (similarity(lists, lists)[~np.eye(len(kept), dtype=bool)] <= 0.7).all()
    assert thin(greys[:10]) == greys[:10]  # ten or fewer: untouched
    reordered = greys[5:] + greys[:5]
    assert set(thin(reordered)) != set(kept)  # which entries survive depends on the order


GREYS = [("bar", f"#{v:02X}{v:02X}{v:02X}") for v in range(0, 240, 20)]  # 12 close-chained entries


def test_a_long_list_scores_the_mean_over_thinning_orders():
    ref = [("bar", "#000000"), ("bar", "#A0A0A0")]
    by_order = []
    rng = np.random.default_rng(0)
    for _ in range(4000):  # ChartMimic's set order: in effect a random permutation per run
        order = rng.permutation(len(GREYS))
        by_order.append(matched_f1(thin([GREYS[i] for i in order]), ref))
    assert max(by_order) - min(by_order) > 0.1  # one run of ChartMimic could give either
    score = color_f1(GREYS, ref)
    assert min(by_order) < score < max(by_order)
    assert score == pytest.approx(np.mean(by_order), abs=0.03)  # ORDERS simulated seeds ~ random orders
    assert score == pytest.approx(np.mean([matched_f1([GREYS[i] for i in k], ref) for k in thinnings(GREYS)]))


def test_the_thinning_order_follows_the_entries_not_their_listing():
    shuffled = GREYS[7:] + GREYS[:7]
    assert color_f1(GREYS, GREYS) == 1.0  # the same entries get the same priorities on both sides
    assert color_f1(shuffled, GREYS) == 1.0
    assert color_f1(GREYS + [("axhline", "#FF0000")], GREYS) == pytest.approx(color_f1(shuffled + [("axhline", "#FF0000")], GREYS))
    assert len(set(thinnings(GREYS))) > 1  # the simulated seeds do thin differently


def test_the_colour_score_does_not_follow_the_interpreters_hash_seed():
    code = "from vinci.eval.chartmimic import color_f1\n" f"g = {GREYS!r}\n" "print(repr(color_f1(g, g[3:9] + [('bar', '#FF0000')])))"
    values = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(values) == 1


def test_empty_sides_score_zero_even_against_empty():
    empty = {"texts": [], "types": [], "colors": [], "layout": []}
    full = {"texts": ["a"], "types": ["t"], "colors": [["bar", "#FF0000"]], "layout": [[1, 1, 0, 0, 0, 0]]}
    assert chartmimic_scores(empty, empty) == dict.fromkeys(SCORE_KEYS, 0.0)
    assert chartmimic_scores(empty, full) == chartmimic_scores(full, empty) == dict.fromkeys(SCORE_KEYS, 0.0)
    assert chartmimic_scores(None, full) == dict.fromkeys(SCORE_KEYS, 0.0)
    assert chartmimic_scores(full, full) == dict.fromkeys(SCORE_KEYS, 1.0)
    assert multiset_f1(["a", "a", "b"], ["a", "b", "b", "c"]) == pytest.approx(2 * 2 / 7)


# ----------------------------------------------------------------------------- hand-built charts


def test_texts_exclude_tick_labels_and_count_each_drawn_line():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([0, 1e6], [0, 1e6])\n"  # offset text '1e6' on both axes
        "ax.set_title('Two\\nlines')\n"
        "ax.set_xlabel('time  (s)')\n"
        "ax.set_xticks([0, 5e5], ['zero', 'half'])\n"
        "plt.savefig('x.pdf')\n"
    )
    assert sorted(part["texts"]) == ["Two", "lines", "time  (s)"]  # whitespace kept, ticks gone


def test_texts_keep_3d_z_ticks_and_skip_nothing_else():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\n"
        "ax = plt.figure().add_subplot(projection='3d')\n"
        "ax.plot([0, 1], [0, 1], [0, 1])\n"
        "ax.set_zticks([0, 1], ['low', 'high'])\n"
        "ax.set_xticks([0, 1], ['xa', 'xb'])\n"
        "ax.set_zlabel('depth')\n"
        "plt.savefig('x.pdf')\n"
    )
    assert sorted(part["texts"]) == ["depth", "high", "low"]


def test_a_chart_without_text_scores_zero_against_itself():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])\nplt.savefig('x.pdf')\n"
    )
    assert part["texts"] == []
    scores = chartmimic_scores(part, part)
    assert scores["text_f1"] == 0.0 and scores["type_f1"] == 1.0


def test_one_colour_entry_per_distinct_colour_per_function():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.bar(range(6), [1] * 6, color=['red', 'blue'] * 3)\n"
        "ax.bar(range(6), [2] * 6, color='red')\n"
        "ax.plot([0, 1], [1, 0], color='red')\n"
        "ax.hist([1, 2, 2, 3], color='#00ff00')\n"  # hist's own bars: hist's colour, not bar's
        "plt.savefig('x.pdf')\n"
    )
    assert sorted(map(tuple, part["colors"])) == [
        ("bar", "#0000FF"), ("bar", "#FF0000"), ("hist", "#00FF00"), ("line", "#FF0000"),
    ]  # fmt: skip
    assert part["types"] == ["__init__.py-bar", "__init__.py-bar", "_axes.py-plot", "deprecation.py-hist"]


def test_box_colours_are_keyed_by_their_colour_at_the_boxplot_call():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "parts = ax.boxplot([[1, 2, 3], [2, 3, 4], [3, 4, 5]], patch_artist=True)\n"
        "for box, colour in zip(parts['boxes'], ['red', 'green', 'blue']):\n"
        "    box.set_facecolor(colour)\n"
        "plt.savefig('x.pdf')\n"
    )
    assert part["colors"] == [["boxplot", "#0000FF"]]  # all boxes shared one colour at the call: the last counts


def test_colormaps_are_compared_by_name():
    image = (
        "import numpy as np\nimport matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nax.imshow(np.eye(3), cmap='{}')\nax.set_title('t')\nplt.savefig('x.pdf')\n"
    )
    greys, blues = chartmimic_part(image.format("Greys")), chartmimic_part(image.format("Blues"))
    assert greys["colors"] == [["imshow", "Greys"]] and blues["colors"] == [["imshow", "Blues"]]
    assert chartmimic_scores(blues, greys)["color_f1"] == 0.0
    assert chartmimic_scores(greys, greys)["color_f1"] == 1.0


def test_twin_axes_and_colorbars_are_layout_cells():
    part = chartmimic_part(
        "import numpy as np\nimport matplotlib.pyplot as plt\n"
        "fig, (ax, bx) = plt.subplots(1, 2)\n"
        "ax.plot([0, 1], [0, 1])\nax.twinx().plot([0, 1], [1, 0])\n"
        "fig.colorbar(bx.imshow(np.eye(2)), ax=bx)\n"
        "fig.add_axes([0.1, 0.1, 0.1, 0.1])\n"  # no SubplotSpec: not a cell
        "plt.savefig('x.pdf')\n"
    )
    assert sorted(part["layout"]) == sorted([
        [1, 2, 0, 0, 0, 0],  # ax
        [1, 2, 0, 0, 0, 0],  # its twin, the same cell again
        [3, 2, 0, 2, 0, 0],  # bx, moved by its colorbar into a nested 3x2 grid: rows 0-2 of column 0
        [3, 2, 1, 1, 1, 1],  # the colorbar, the middle of column 1 of that grid
    ])  # fmt: skip
    single = {**part, "layout": [[1, 2, 0, 0, 0, 0]]}
    assert chartmimic_scores(single, part)["layout_f1"] == pytest.approx(2 * 1 / (1 + 4))


def test_polar_plots_and_subclassed_polar_axes_follow_chartmimic():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\nfrom matplotlib.projections.polar import PolarAxes\n"
        "from matplotlib.projections import register_projection\n"
        "class Radar(PolarAxes):\n    name = 'radar_test'\n"
        "register_projection(Radar)\n"
        "fig = plt.figure()\n"
        "fig.add_subplot(121, projection='polar').plot([0, 1], [1, 2], color='red')\n"
        "fig.add_subplot(122, projection='radar_test').plot([0, 1], [1, 2], color='blue')\n"
        "plt.savefig('x.pdf')\n"
    )
    assert part["colors"] == [["polar:plot", "#FF0000"]]  # the subclass's line has no colour entry
    assert part["types"] == ["_axes.py_polar-plot", "_axes.py-plot"]


def test_a_colour_chartmimic_cannot_spell_empties_the_colour_list():
    part = chartmimic_part(
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
        "bars = ax.bar([0, 1], [1, 2])\nbars[-1].set_facecolor('red')\n"  # ChartMimic reads list('red'): fails
        "ax.plot([0, 1], [0, 1])\nplt.savefig('x.pdf')\n"
    )
    assert part["colors"] == [] and part["types"]
