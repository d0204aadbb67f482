"""Chart F1 from call traces: hand-computed scores on hand-built traces, then the real
ChartMimic corpus: every script scores 1.0 against its own trace, and perturbed copies lower
exactly the sub-score that matches the perturbation."""

from __future__ import annotations

import re

import pytest

from vinci.eval.chart_f1 import SCORE_KEYS, chart_scores, color_f1, color_similarity, multiset_f1
from vinci.render import RenderJob, RenderPool


def trace(calls=(), texts=(), layout=()):
    return {
        "calls": [{"type": t, "colors": list(c)} for t, c in calls],
        "texts": list(texts),
        "layout": [list(c) for c in layout],
    }


def grey_lightness(level: int) -> float:
    """CIE L* of the sRGB grey (level, level, level), written out independently of the module."""
    v = level / 255
    y = v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    return 116 * y ** (1 / 3) - 16 if y > (6 / 29) ** 3 else 903.3 * y


# ----------------------------------------------------------------------------- hand-built traces


def test_multiset_f1_counts_multiplicities():
    assert multiset_f1(["a", "b", "b", "c"], ["a", "b", "d"]) == pytest.approx(2 * 2 / 7)
    assert multiset_f1(["plot", "plot"], ["plot"]) == pytest.approx(2 * 1 / 3)
    assert multiset_f1([], []) == 1.0
    assert multiset_f1(["a"], []) == 0.0 and multiset_f1([], ["a"]) == 0.0


def test_scores_of_a_partly_right_chart():
    ref = trace(
        calls=[("plot", ["#ff0000"]), ("bar", ["#0000ff", "#0000ff"]), ("pie", ["#00ff00"])],
        texts=["Title", "x", "y", "0", "1"],
        layout=[(1, 2, 0, 1, 0, 1), (1, 2, 0, 1, 1, 2)],
    )
    pred = trace(
        calls=[("plot", ["#ff0000"]), ("barh", ["#0000ff", "#0000ff"])],
        texts=["Title", "x", "0", "1", "2", "  "],
        layout=[(1, 1, 0, 1, 0, 1)],
    )
    scores = chart_scores(pred, ref)
    assert scores["text_f1"] == pytest.approx(2 * 4 / (5 + 5))  # the blank text is not a text
    assert scores["type_f1"] == pytest.approx(2 * 1 / (2 + 3))
    assert scores["color_f1"] == pytest.approx(2 * 3 / (3 + 4))  # three exact colours, green missing
    assert scores["layout_f1"] == 0.0


def test_colour_score_ignores_which_type_drew_the_colour():
    ref = trace(calls=[("bar", ["#123456", "#abcdef"])], texts=["t"], layout=[(1, 1, 0, 1, 0, 1)])
    pred = trace(calls=[("scatter", ["#abcdef"]), ("plot", ["#123456"])], texts=["t"], layout=[(1, 1, 0, 1, 0, 1)])
    assert chart_scores(pred, ref) == {"text_f1": 1.0, "type_f1": 0.0, "color_f1": 1.0, "layout_f1": 1.0}


def test_colour_similarity_is_one_minus_lab_distance_over_100():
    light = grey_lightness(0x77)  # about 50.0
    similarity = color_similarity(["#000000", "#ffffff"], ["#777777", "#ffffff", "#000000"])
    assert similarity[0, 0] == pytest.approx(1 - light / 100, abs=1e-3)
    assert similarity[1, 0] == pytest.approx(1 - (100 - light) / 100, abs=1e-3)
    assert similarity[0, 1] == pytest.approx(0.0, abs=1e-3)  # black vs white: nothing alike
    assert similarity[0, 2] == similarity[1, 1] == 1.0
    assert similarity[0, 0] == pytest.approx(color_similarity(["#777777"], ["#000000"])[0, 0])


def test_colour_matching_is_optimal_not_greedy():
    # greedy pairs the two closest greys (0.9) and is left with black vs white (0.0);
    # the optimal matching pairs black-grey and grey-white instead
    dark, light = grey_lightness(0x77), grey_lightness(0x91)
    pred, ref = ["#000000", "#919191"], ["#777777", "#ffffff"]
    best = (1 - dark / 100) + (1 - (100 - light) / 100)
    greedy = 1 - (light - dark) / 100
    assert best > greedy
    assert color_f1(pred, ref) == pytest.approx(2 * best / 4, abs=1e-3)


def test_colour_f1_with_a_missing_and_an_extra_colour():
    assert color_f1(["#ff0000"], ["#ff0000", "#0000ff"]) == pytest.approx(2 / 3)
    assert color_f1(["#ff0000", "#ff0000", "#ff0000"], ["#ff0000"]) == pytest.approx(2 / 4)
    assert color_f1([], []) == 1.0 and color_f1(["#ff0000"], []) == 0.0


def test_missing_prediction_scores_zero_and_empty_against_empty_scores_one():
    ref = trace(calls=[("plot", ["#ff0000"])], texts=["a"], layout=[(1, 1, 0, 1, 0, 1)])
    assert chart_scores(None, ref) == dict.fromkeys(SCORE_KEYS, 0.0)
    assert chart_scores(trace(), trace()) == dict.fromkeys(SCORE_KEYS, 1.0)
    assert chart_scores(trace(), ref) == dict.fromkeys(SCORE_KEYS, 0.0)
    with pytest.raises(ValueError):
        chart_scores(ref, None)


def test_ill_typed_trace_entries_are_ignored():
    pred = {
        "calls": [{"type": "plot", "colors": ["#ff0000", "red", 5]}, "junk"],
        "texts": ["a", 3],
        "layout": [[1, 1, 0, 1, 0, 1], [1]],
    }
    ref = trace(calls=[("plot", ["#ff0000"])], texts=["a"], layout=[(1, 1, 0, 1, 0, 1)])
    assert chart_scores(pred, ref) == dict.fromkeys(SCORE_KEYS, 1.0)


# ----------------------------------------------------------------------------- the real corpus

PALETTE = (
    "import matplotlib\n"
    "matplotlib.rcParams['axes.prop_cycle'] = "
    "matplotlib.cycler(color=['#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'])\n"
)
# Scripts whose data colours the recolouring reaches (hex literals or the default cycle).
RECOLOURED = (
    "line_4", "pie_4", "bar_10", "CB_1", "radar_1", "hist_1", "errorbar_4", "box_24", "multidiff_11", "violin_3"
)  # fmt: skip


def recolour(code: str) -> str:
    """Every '#rrggbb' literal replaced by its complement, and a different default colour cycle."""
    code = re.sub(r"#([0-9a-fA-F]{6})\b", lambda m: f"#{0xFFFFFF ^ int(m.group(1), 16):06x}", code)
    return PALETTE + code


def replace_once(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, old
    return code.replace(old, new)


@pytest.fixture(scope="module")
def chart_pool():
    with RenderPool(workers=2, timeout=60.0) as pool:
        yield pool


@pytest.fixture(scope="module")
def corpus(corpora, chart_pool):
    """{name: (source, RenderResult)} for every ChartMimic script, traced once."""
    scripts = sorted((corpora / "chart").glob("*.py"))
    results = chart_pool.render_many([RenderJob("python", s.read_text(), trace=True) for s in scripts])
    return {s.stem: (s.read_text(), r) for s, r in zip(scripts, results)}


def trace_all(pool, codes: list[str]) -> list[dict]:
    results = pool.render_many([RenderJob("python", code, trace=True) for code in codes])
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return [r.trace for r in results]


def test_every_traced_corpus_script_scores_one_against_itself(corpus, chart_pool):
    traced = {name: result.trace for name, (_, result) in corpus.items() if result.ok}
    failed = {name: result for name, (_, result) in corpus.items() if not result.ok}
    assert all(r.kind == "crash" for r in failed.values())  # only scripts broken on their own (see test_corpora)
    assert len(traced) >= 0.9 * len(corpus), sorted(failed)
    for name, reference in traced.items():
        assert reference["layout"] and reference["calls"], name
        assert reference["texts"] or name in ("density_2", "scatters_4"), name  # these two hide every label
        assert chart_scores(reference, reference) == dict.fromkeys(SCORE_KEYS, 1.0), name
    # a second, independent render of the same program traces the same chart
    sample = sorted(traced)[::5]
    again = trace_all(chart_pool, [corpus[name][0] for name in sample])
    for name, retraced in zip(sample, again):
        assert chart_scores(retraced, traced[name]) == dict.fromkeys(SCORE_KEYS, 1.0), name
    # and different charts do not score 1.0 against each other
    names = sorted(traced)
    for name, other in zip(names, names[1:]):
        assert min(chart_scores(traced[other], traced[name]).values()) < 1.0, (name, other)


def test_recoloured_corpus_scripts_lower_only_the_colour_score(corpus, chart_pool):
    recoloured = trace_all(chart_pool, [recolour(corpus[name][0]) for name in RECOLOURED])
    for name, perturbed in zip(RECOLOURED, recoloured):
        scores = chart_scores(perturbed, corpus[name][1].trace)
        assert scores["color_f1"] < 0.99, (name, scores)
        assert (scores["text_f1"], scores["type_f1"], scores["layout_f1"]) == (1.0, 1.0, 1.0), (name, scores)


def test_dropping_an_unlabelled_series_lowers_type_and_colour_only(corpus, chart_pool):
    # Both dropped calls carry no legend label, and the axes keep their tick labels (line_40
    # fixes its y ticks; CB_1's dashed mean line does not change the data limits).
    band = 'plt.fill_between(snr_values, jpeg_ldpc - 5, jpeg_ldpc + 5, color="#1f77b4", alpha=0.2)\n'
    mean_line = 'ax.axvline(np.mean(data_in), color="black", linestyle="dashed")\n'
    cases = {"line_40": (band, 8, 8), "CB_1": (mean_line, 6, 34)}  # name: (line, calls, colours) of the reference
    perturbed = trace_all(chart_pool, [replace_once(corpus[name][0], line, "") for name, (line, _, _) in cases.items()])
    for (name, (_, calls, colours)), pred in zip(cases.items(), perturbed):
        reference = corpus[name][1].trace
        assert len(reference["calls"]) == calls and sum(len(c["colors"]) for c in reference["calls"]) == colours
        scores = chart_scores(pred, reference)
        # one call and one exactly matching colour fewer: F1 = 2(n - 1) / (2n - 1)
        assert scores["type_f1"] == pytest.approx(2 * (calls - 1) / (2 * calls - 1)), name
        assert scores["color_f1"] == pytest.approx(2 * (colours - 1) / (2 * colours - 1)), name
        assert scores["text_f1"] == scores["layout_f1"] == 1.0, name


def test_swapping_the_chart_type_lowers_only_the_type_score(corpus, chart_pool):
    # line_22: its one line becomes a scatter of the same colour and label (ticks are fixed)
    line = 'ax.plot(x, y, marker="o", color="blue", label=label_1)'
    scatter = 'ax.scatter(x, y, marker="o", color="blue", label=label_1)'
    bars = (
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.{}([0, 1, 2], [3, 1, 2], color=['#aa0000', '#00aa00', '#0000aa'])\n"
        "ax.set_xticks([])\nax.set_yticks([])\nax.set_title('Sales')\n"
    )
    swapped = replace_once(corpus["line_22"][0], line, scatter)
    pred, bar, barh = trace_all(chart_pool, [swapped, bars.format("bar"), bars.format("barh")])
    scores = chart_scores(pred, corpus["line_22"][1].trace)
    # plot + 4 axhline against scatter + 4 axhline: 2 * 4 / 10
    assert scores == {"text_f1": 1.0, "type_f1": pytest.approx(0.8), "color_f1": 1.0, "layout_f1": 1.0}
    assert chart_scores(barh, bar) == {"text_f1": 1.0, "type_f1": 0.0, "color_f1": 1.0, "layout_f1": 1.0}
