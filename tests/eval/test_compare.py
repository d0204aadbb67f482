"""vinci.eval.compare: the one bootstrap, pairing by id, per-prompt means over runs, the table."""

import math
import random

import pytest

from vinci.eval.compare import average_runs, bootstrap_diff, bootstrap_mean, format_table, paired
from vinci.eval.records import Prediction
from vinci.eval.report import summarise


def prediction(id_: str, language: str = "svg", **scores) -> Prediction:
    return Prediction(id=id_, source="", language=language, prompt="", text=f"text {id_}", code=None, scores=scores)


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = random.Random(0)
    values = [rng.gauss(0.5, 0.2) for _ in range(400)]
    mean, low, high = bootstrap_mean(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = 1.96 * sd / math.sqrt(len(values))  # the 95% interval of a mean of 400 draws
    assert mean == pytest.approx(sum(values) / len(values))
    assert low < mean < high
    assert (mean - low) == pytest.approx(half, rel=0.15) and (high - mean) == pytest.approx(half, rel=0.15)


def test_bootstrap_of_a_constant_shift_is_exact_and_seeded():
    a = [0.1, 0.4, 0.9, 0.3]
    assert bootstrap_diff(a, [x + 0.25 for x in a]) == pytest.approx((0.25, 0.25, 0.25))
    assert bootstrap_diff(a, a[::-1], seed=3) == bootstrap_diff(a, a[::-1], seed=3)
    assert bootstrap_diff(a, a[::-1], seed=3, chunk=7)[0] == pytest.approx(0.0)  # chunked draws, same mean
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_diff(a, a[:2])
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_diff([], [])


def test_paired_matches_prompts_by_id_whatever_the_order():
    base = [prediction("a", reward=0.1), prediction("b", reward=0.2), prediction("c", reward=0.3)]
    other = [prediction("c", reward=0.5), prediction("a", reward=0.4), prediction("z", reward=1.0)]
    assert paired(base, other) == ([0.3, 0.1], [0.5, 0.4])  # z is in one run only
    with pytest.raises(ValueError, match="share no prompt ids"):
        paired(base, [prediction("z", reward=1.0)])


def test_average_runs_means_each_score_per_prompt():
    one = [prediction("a", reward=0.0, visual=0.2), prediction("b", reward=1.0)]
    two = [prediction("b", reward=0.5, text_f1=0.4), prediction("a", reward=1.0, visual=0.4)]
    mean = average_runs([one, two])
    assert [p.id for p in mean] == ["a", "b"] and mean[0].text == "text a"  # the first run's order and text
    assert mean[0].scores == pytest.approx({"reward": 0.5, "visual": 0.3})
    assert mean[1].scores == pytest.approx({"reward": 0.75, "text_f1": 0.4})  # over the runs that have it
    assert one[0].scores == {"reward": 0.0, "visual": 0.2}  # inputs untouched
    with pytest.raises(ValueError, match="same rows"):
        average_runs([one, [prediction("a", reward=1.0)]])


def test_format_table_prints_one_line_per_run_and_domain():
    predictions = [prediction("a", "python", format=1.0, render=1.0, visual=0.5, reward=0.55),
                   prediction("b", "svg", format=0.0, render=0.0, visual=0.0, reward=0.0)]
    lines = format_table({"sft": summarise(predictions)}).splitlines()
    assert lines[0].split() == ["run", "domain", "n", "format", "render", "visual", "reward"]
    assert [line.split() for line in lines[1:]] == [
        ["sft", "chart", "1", "1.000", "1.000", "0.500", "0.550"],
        ["sft", "icon", "1", "0.000", "0.000", "0.000", "0.000"],
        ["sft", "all", "2", "0.500", "0.500", "0.250", "0.275"],
    ]
