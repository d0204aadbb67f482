"""Comparing evaluation runs: per-prompt means over sampled runs, paired differences, the bootstrap.

A run is the list of `Prediction`s that `main.py predict` wrote (`vinci.eval.records`); its
per-domain means are `vinci.eval.report.summarise`, the same table report.html shows. What the
benchmarks add on top is here:

    average_runs(runs)          per-prompt mean scores over K runs of the same prompts (K sampled answers)
    paired(base, other)         (base, other) values of one score for every prompt both runs answered, by id
    bootstrap_diff(a, b)        mean of b - a over paired samples with its 95% bootstrap interval
    bootstrap_mean(values)      mean with its 95% bootstrap interval
    format_table(summaries)     plain text: one line per (run, domain)

The bootstrap is the percentile bootstrap: resample the n pairs with replacement `iterations`
times and take the 2.5% and 97.5% quantiles of the resampled means. It assumes the prompts are
exchangeable and says nothing about variance across training seeds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from vinci.eval.records import Prediction

TABLE_COLUMNS = ("format", "render", "visual", "reward")  # the means `format_table` prints, after n


def average_runs(runs: Sequence[Sequence[Prediction]]) -> list[Prediction]:
    """One prediction per prompt whose scores are the means over the runs (each score over the
    runs that have it); text, code and paths are the first run's. Every run must hold the same ids."""
    if not runs:
        raise ValueError("average_runs needs at least one run")
    first = list(runs[0])
    ids = [p.id for p in first]
    by_id = [{p.id: p for p in run} for run in runs]
    for k, run in enumerate(by_id):
        if set(run) != set(ids) or len(run) != len(runs[k]):
            raise ValueError(f"run {k} answered other prompts than run 0: they must evaluate the same rows")
    out = []
    for prediction in first:
        values: dict[str, list[float]] = {}
        for run in by_id:
            for name, value in run[prediction.id].scores.items():
                values.setdefault(name, []).append(float(value))
        out.append(replace(prediction, scores={name: sum(v) / len(v) for name, v in values.items()}))
    return out


def paired(base: Sequence[Prediction], other: Sequence[Prediction], score: str = "reward") -> tuple[list[float], list[float]]:
    """(base values, other values) of `score` over the prompts both runs answered, in `other`'s order."""
    before = {p.id: p.scores[score] for p in base}
    pairs = [(before[p.id], p.scores[score]) for p in other if p.id in before]
    if not pairs:
        raise ValueError("the two runs share no prompt ids: were they evaluated on the same rows?")
    return [a for a, _ in pairs], [b for _, b in pairs]


def bootstrap_diff(a: Sequence[float], b: Sequence[float], iterations: int = 10000, seed: int = 0,
                   chunk: int = 1000) -> tuple[float, float, float]:
    """Mean of b - a over paired samples and its 95% bootstrap interval: (mean, low, high).

    Resamples are drawn `chunk` at a time so memory stays at chunk x n indices for any n."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("bootstrap_diff needs at least one pair")
    diff = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)  # [n]
    generator = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, iterations, chunk):
        index = torch.randint(0, len(diff), (min(chunk, iterations - start), len(diff)), generator=generator)  # [c, n]
        means.append(diff[index].mean(dim=1))  # [c]
    low, high = torch.quantile(torch.cat(means), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()  # of [I]
    return float(diff.mean()), low, high


def bootstrap_mean(values: Sequence[float], iterations: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% bootstrap interval: (mean, low, high)."""
    return bootstrap_diff([0.0] * len(values), values, iterations, seed)


def format_table(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """Plain-text table of run -> `summarise(...)` output: one line per (run, domain)."""
    head = f"{'run':<10} {'domain':<8} {'n':>4} " + " ".join(f"{c:>7}" for c in TABLE_COLUMNS)
    lines = [head]
    for run, summary in summaries.items():
        for domain, means in summary.items():
            cells = " ".join(f"{means[c]:>7.3f}" if c in means else f"{'-':>7}" for c in TABLE_COLUMNS)
            lines.append(f"{run:<10} {domain:<8} {int(means['n']):>4} {cells}")
    return "\n".join(lines)
