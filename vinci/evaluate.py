"""Held-out evaluation of an adapter: format rate, render rate and visual reward per domain.

Greedy decoding (or G samples) on RL-schema rows, code extracted and rendered in the pool,
scored with the same composite reward ViRL trains on. Used by `make demo`, by
benchmarks/heldout.py and by benchmarks/virl_gain.py, which compares two adapters sample by
sample with a paired bootstrap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Per-sample results of one evaluation, in row order."""

    languages: list[str] = field(default_factory=list)
    overall: list[float] = field(default_factory=list)
    visual: list[float] = field(default_factory=list)
    format: list[float] = field(default_factory=list)
    rendered: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def table(self) -> dict[str, dict[str, float]]:
        """Means per domain and overall: {"python": {"n":..., "format":..., ...}, ..., "all": {...}}."""
        out = {}
        for language in sorted(set(self.languages)) + ["all"]:
            rows = [i for i, lang in enumerate(self.languages) if language in ("all", lang)]
            if not rows:
                continue
            mean = lambda xs: sum(xs[i] for i in rows) / len(rows)  # noqa: E731
            out[language] = {
                "n": len(rows),
                "format": mean(self.format),
                "render": mean(self.rendered),
                "visual": mean(self.visual),
                "reward": mean(self.overall),
            }
        return out


def load_for_eval(model: str, adapter: Optional[str]):
    """Base model with the adapter applied, in eval mode (plain peft, no training wrappers)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from vinci.backbone import load_processor

    base = AutoModelForImageTextToText.from_pretrained(model)
    net = PeftModel.from_pretrained(base, adapter) if adapter else base
    return net.eval(), load_processor(model)


@torch.no_grad()
def evaluate(
    net,
    processor,
    rows,
    pool,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    encoder: str = "pixel",
) -> Scored:
    """Generate for every example in `rows` (a Dataset of Example), render and score."""
    from vinci.data.collate import RLCollator
    from vinci.eval.scoring import score_samples
    from vinci.generation import sample

    collate = RLCollator(processor)
    scored = Scored()
    torch.manual_seed(seed)
    for start in range(0, len(rows), batch_size):
        examples = [rows[i] for i in range(start, min(len(rows), start + batch_size))]
        batch = collate(examples)
        done = sample(net, processor, batch.inputs, num_samples=1, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature)
        samples = score_samples(done.texts, batch.languages, batch.images, pool, encoder=encoder)
        scored.languages += batch.languages
        scored.overall += [row["reward"] for row in samples.scores]
        scored.visual += [row["visual"] for row in samples.scores]
        scored.format += [row["format"] for row in samples.scores]
        scored.rendered += [row["render"] for row in samples.scores]
        scored.texts += done.texts
    return scored


def average(runs: list[Scored]) -> Scored:
    """Per-prompt means over several evaluations of the same rows (e.g. K sampled answers)."""
    out = Scored(languages=list(runs[0].languages), texts=list(runs[0].texts))
    for name in ("overall", "visual", "format", "rendered"):
        columns = [getattr(run, name) for run in runs]
        setattr(out, name, [sum(values) / len(values) for values in zip(*columns)])
    return out


def bootstrap_diff(a: list[float], b: list[float], iterations: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a over paired samples and its 95% bootstrap interval: (mean, low, high)."""
    diff = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)  # [n]
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(diff), (iterations, len(diff)), generator=generator)  # [I, n]
    means = diff[index].mean(dim=1)  # [I]
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(diff.mean()), low, high


def format_table(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """Plain-text table: one line per (run, domain)."""
    lines = [f"{'run':<10} {'domain':<8} {'n':>4} {'format':>7} {'render':>7} {'visual':>7} {'reward':>7}"]
    for run, table in tables.items():
        for domain, m in table.items():
            lines.append(
                f"{run:<10} {domain:<8} {m['n']:>4} {m['format']:>7.3f} {m['render']:>7.3f} {m['visual']:>7.3f} {m['reward']:>7.3f}"
            )
    return "\n".join(lines)


def read_test_rows(path: Path, min_pixels: int, max_pixels: int):
    from vinci.data.rows import read_rows

    return read_rows(path, schema="rl", min_pixels=min_pixels, max_pixels=max_pixels)
