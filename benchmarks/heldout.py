"""Held-out format rate, render rate and visual reward per domain, for one or more adapters.

    python benchmarks/heldout.py                                   # the SFT adapter of configs/sft.yaml
    python benchmarks/heldout.py --adapters sft=runs/sft/adapter virl=runs/virl/adapter

Greedy decoding on the synthetic corpus's held-out RL split; code extracted, rendered in the
sandboxed pool, scored with the training reward (0.9 visual + 0.1 format, pixel encoder).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vinci.evaluate import average, evaluate, format_table, load_for_eval, read_test_rows  # noqa: E402


def reference_render_options(rows_path: Path):
    """The options the rows' reference images were rendered with, so answers render alike: the
    corpus manifest's when the rows sit in a synthetic corpus, else the defaults (None). A
    manifest this code cannot read (another corpus version) is an error, not a silent default."""
    from vinci.data.synth import read_manifest
    from vinci.data.synth.corpus import MANIFEST, VERSION
    from vinci.render import RenderOptions

    manifest = read_manifest(rows_path.parent)
    if manifest is None and (rows_path.parent / MANIFEST).is_file():
        raise ValueError(
            f"{rows_path.parent / MANIFEST} is not a version-{VERSION} corpus manifest, so the render "
            f"options of {rows_path.name}'s reference images are unknown: rebuild the corpus "
            f"(python -m vinci.data.synth --out {rows_path.parent}) or run SFT, which rebuilds it"
        )
    return RenderOptions(**manifest["render_options"]) if manifest else None


def run(adapters: dict[str, str], model: str, rows_path: str, max_new_tokens: int, limit: int, workers: int, samples: int = 0,
        temperature: float = 1.0):
    """Evaluate each adapter; samples=0 decodes greedily, samples=K averages K answers sampled at `temperature` per prompt."""
    from vinci.render import RenderPool

    options = reference_render_options(Path(rows_path))
    rows = read_test_rows(Path(rows_path), min_pixels=56 * 56, max_pixels=224 * 224)
    if limit:
        from torch.utils.data import Subset

        rows = Subset(rows, range(min(limit, len(rows))))
    results, tables = {}, {}
    with RenderPool(workers=workers, timeout=10.0, options=options) as pool:
        for name, adapter in adapters.items():
            started = time.perf_counter()
            net, processor = load_for_eval(model, adapter or None)
            if samples:
                runs = [evaluate(net, processor, rows, pool, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, seed=k)
                        for k in range(samples)]
                results[name] = average(runs)
            else:
                results[name] = evaluate(net, processor, rows, pool, max_new_tokens=max_new_tokens)
            tables[name] = results[name].table()
            logging.info("%s evaluated in %.0f s", name, time.perf_counter() - started)
    return results, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", nargs="+", default=["sft=runs/sft/adapter"], help="NAME=DIR pairs")
    parser.add_argument("--model", default="artifacts/tiny-vlm")
    parser.add_argument("--rows", default="artifacts/synth/rl_test.jsonl")
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N rows")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    adapters = dict(pair.split("=", 1) for pair in args.adapters)
    for name, adapter in adapters.items():
        if adapter and not (Path(adapter) / "adapter_config.json").is_file():
            parser.error(f"no adapter at {adapter} for {name}: run its training stage first")
    _, tables = run(adapters, args.model, args.rows, args.max_new_tokens, args.limit, args.workers)
    print(format_table(tables))


if __name__ == "__main__":
    main()
