"""Chart scores from call traces: vinci's own two on hand-built traces, then the real
ChartMimic corpus through the sandboxed pool: every script scores 1.0 against its own trace
(ChartMimic's four where the chart has that evidence), and perturbed copies lower exactly the
sub-score that matches the perturbation. ChartMimic's definitions are pinned one by one in
test_chartmimic.py."""

from __future__ import annotations

import re

import pytest

from vinci.eval.chart_f1 import SCORE_KEYS, chart_scores, color_similarity, multiset_f1
from vinci.eval.chart_f1 import element_color_f1 as color_f1
from vinci.render import RenderJob, RenderPool


def trace(calls=(), texts=(), layout=()):
    return {
        "calls": [{"type": t, "colors": list(c)} for t, c in calls],
        "texts": list(texts),
        "layout": [list(c) for c in layout],
    }


CHARTMIMIC = ("text_f1", "type_f1", "color_f1", "layout_f1")


def vinci_only(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k.startswith("vinci_")}


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
    assert scores["vinci_text_f1"] == pytest.approx(2 * 4 / (5 + 5))  # the blank text is not a text
    assert scores["vinci_color_f1"] == pytest.approx(2 * 3 / (3 + 4))  # three exact colours, green missing
    assert all(scores[k] == 0.0 for k in CHARTMIMIC)  # hand-built traces carry no ChartMimic part


def test_colour_score_ignores_which_type_drew_the_colour():
    ref = trace(calls=[("bar", ["#123456", "#abcdef"])], texts=["t"], layout=[(1, 1, 0, 1, 0, 1)])
    pred = trace(calls=[("scatter", ["#abcdef"]), ("plot", ["#123456"])], texts=["t"], layout=[(1, 1, 0, 1, 0, 1)])
    assert vinci_only(chart_scores(pred, ref)) == {"vinci_text_f1": 1.0, "vinci_color_f1": 1.0}


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


def test_missing_prediction_scores_zero_and_empty_against_empty_scores_one_for_vinci_only():
    ref = trace(calls=[("plot", ["#ff0000"])], texts=["a"], layout=[(1, 1, 0, 1, 0, 1)])
    assert chart_scores(None, ref) == dict.fromkeys(SCORE_KEYS, 0.0)
    both_empty = chart_scores(trace(), trace())
    assert vinci_only(both_empty) == {"vinci_text_f1": 1.0, "vinci_color_f1": 1.0}
    assert all(both_empty[k] == 0.0 for k in CHARTMIMIC)  # ChartMimic: nothing against nothing is 0
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
    assert vinci_only(chart_scores(pred, ref)) == {"vinci_text_f1": 1.0, "vinci_color_f1": 1.0}
    assert chart_scores({**pred, "chartmimic": {"texts": [1], "colors": [["bar"]], "layout": "x"}}, ref)["text_f1"] == 0.0


def self_scores(reference: dict) -> dict:
    """What a trace scores against itself: 1.0, except ChartMimic's 0 for evidence it lacks."""
    part = reference["chartmimic"]
    has = {"text_f1": part["texts"], "type_f1": part["types"], "color_f1": part["colors"], "layout_f1": part["layout"]}
    return {key: float(bool(has.get(key, True))) for key in SCORE_KEYS}


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
        assert reference["chartmimic"]["types"] and reference["chartmimic"]["layout"], name
        assert chart_scores(reference, reference) == self_scores(reference), name
    # a second, independent render of the same program traces the same chart
    sample = sorted(traced)[::5]
    again = trace_all(chart_pool, [corpus[name][0] for name in sample])
    for name, retraced in zip(sample, again):
        assert chart_scores(retraced, traced[name]) == self_scores(traced[name]), name
    # and different charts do not score 1.0 against each other
    names = sorted(traced)
    for name, other in zip(names, names[1:]):
        assert min(chart_scores(traced[other], traced[name]).values()) < 1.0, (name, other)


def test_recoloured_corpus_scripts_lower_only_the_colour_score(corpus, chart_pool):
    recoloured = trace_all(chart_pool, [recolour(corpus[name][0]) for name in RECOLOURED])
    for name, perturbed in zip(RECOLOURED, recoloured):
        reference = corpus[name][1].trace
        scores, same = chart_scores(perturbed, reference), self_scores(reference)
        assert scores["vinci_color_f1"] < 0.99, (name, scores)
        # box_24 colours its boxes from Set3 after the boxplot call; ChartMimic sees only the
        # last box, whose colour the recolouring does not reach
        assert (scores["color_f1"] == 1.0) if name == "box_24" else (scores["color_f1"] < 0.99), (name, scores)
        for key in ("text_f1", "type_f1", "layout_f1", "vinci_text_f1"):
            assert scores[key] == same[key], (name, key, scores)


def test_dropping_an_unlabelled_series_lowers_type_and_colour_only(corpus, chart_pool):
    # Both dropped calls carry no legend label, and the axes keep their tick labels (line_40
    # fixes its y ticks; CB_1's dashed mean line does not change the data limits).
    band = 'plt.fill_between(snr_values, jpeg_ldpc - 5, jpeg_ldpc + 5, color="#1f77b4", alpha=0.2)\n'
    mean_line = 'ax.axvline(np.mean(data_in), color="black", linestyle="dashed")\n'
    # name: (line, colour entries it takes away); CB_1 keeps another black axvline, and
    # ChartMimic keeps one entry per distinct colour per drawing function
    cases = {"line_40": (band, [["fill_between", "#1F77B4"]]), "CB_1": (mean_line, [])}
    perturbed = trace_all(chart_pool, [replace_once(corpus[name][0], line, "") for name, (line, _) in cases.items()])
    for (name, (_, lost)), pred in zip(cases.items(), perturbed):
        reference = corpus[name][1].trace
        calls, colours = len(reference["chartmimic"]["types"]), len(reference["chartmimic"]["colors"])
        assert [c for c in reference["chartmimic"]["colors"] if c not in pred["chartmimic"]["colors"]] == lost, name
        scores = chart_scores(pred, reference)
        # one call fewer: F1 = 2(n - 1) / (2n - 1); likewise for a lost exactly matching colour
        assert scores["type_f1"] == pytest.approx(2 * (calls - 1) / (2 * calls - 1)), name
        expected = 2 * (colours - 1) / (2 * colours - 1) if lost else 1.0
        assert scores["color_f1"] == pytest.approx(expected), name
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
    # plot + 4 axhline against scatter + 4 axhline: 2 * 4 / 10; the line's colour moves from
    # the line group to the scatter group, where ChartMimic does not match it
    assert scores["type_f1"] == pytest.approx(0.8) and scores["color_f1"] < 1.0
    assert scores["text_f1"] == scores["layout_f1"] == scores["vinci_color_f1"] == 1.0
    # barh draws through bar: a new type, the same colour group
    assert {k: chart_scores(barh, bar)[k] for k in CHARTMIMIC} == {"text_f1": 1.0, "type_f1": 0.0, "color_f1": 1.0, "layout_f1": 1.0}
