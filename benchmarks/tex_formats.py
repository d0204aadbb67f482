"""LaTeX renders with and without preamble formats (`RenderPool(tex_formats=...)`), side by side.

    python -m benchmarks.tex_formats                 # 40 synthetic figures + the TikZ corpus, 3 rounds
    python -m benchmarks.tex_formats --rounds 2 --workers 1

Two workloads, each rendered by a pool with formats off and by one with them on, in
alternating rounds (off, on, off, on, ...) so that both see the same machine load:
- synthetic: the embedded corpus's TikZ programs (one shared preamble, as in a ViRL batch);
- corpus: every figure in ../shared/corpora/tikz, each with its own preamble, every figure
  once per round, so a format is built on its second sighting and used from the third.
Prints renders per second both ways, the ratio, and how many images are pixel-identical.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from vinci.data.synth.programs import generate
from vinci.render import RenderJob, RenderOptions, RenderPool

ROOT = Path(__file__).resolve().parents[1]

CORPORA = ROOT.parent / "shared" / "corpora"
WARM = r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}"


def workloads(n_synthetic: int) -> dict[str, list[str]]:
    figures = sorted((CORPORA / "tikz").glob("*.tex"))
    return {
        "synthetic": [p.code for p in generate("latex", n_synthetic, seed=1)],
        "corpus": [f.read_text() for f in figures],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="svg+latex workers per pool (default 2)")
    parser.add_argument("--synthetic", type=int, default=40, help="synthetic figures per round (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per workload and mode (default 3)")
    parser.add_argument("--formats", type=int, default=8, help="formats kept when on (default 8)")
    args = parser.parse_args(argv)
    options = RenderOptions(latex_dpi=100)
    loads = workloads(args.synthetic)
    seconds = {(name, on): 0.0 for name in loads for on in (False, True)}
    images = {(name, on): [] for name in loads for on in (False, True)}
    ok = {(name, on): 0 for name in loads for on in (False, True)}
    pools = {on: RenderPool(workers=args.workers, options=options, tex_formats=args.formats if on else 0) for on in (False, True)}
    try:
        for pool in pools.values():
            pool.render_many([RenderJob("latex", WARM)] * args.workers)  # start the workers
        for name, codes in loads.items():
            jobs = [RenderJob("latex", code, timeout=60.0) for code in codes]
            for _ in range(args.rounds):
                for on in (False, True):
                    started = time.perf_counter()
                    results = pools[on].render_many(jobs)
                    seconds[name, on] += time.perf_counter() - started
                    ok[name, on] += sum(r.ok for r in results)
                    images[name, on].append([r.image for r in results])
    finally:
        for pool in pools.values():
            pool.close()
    print(f"{args.workers} latex workers per pool, {args.rounds} rounds, {os.cpu_count()} CPUs, formats kept: {args.formats}")
    print(f"{'workload':10s} {'renders':>7s} {'off/s':>7s} {'on/s':>7s} {'ratio':>6s} {'identical':>10s} {'ok off':>7s} {'ok on':>7s}")
    for name, codes in loads.items():
        total = len(codes) * args.rounds
        off_rps, on_rps = total / seconds[name, False], total / seconds[name, True]
        pairs = [
            (a, b)
            for off, on in zip(images[name, False], images[name, True])
            for a, b in zip(off, on)
            if a is not None and b is not None
        ]
        identical = sum(a.size == b.size and a.tobytes() == b.tobytes() for a, b in pairs)
        print(
            f"{name:10s} {total:7d} {off_rps:7.2f} {on_rps:7.2f} {on_rps / off_rps:5.2f}x {identical:>4d}/{len(pairs):<5d} "
            f"{ok[name, False] / total:7.1%} {ok[name, True] / total:7.1%}"
        )


if __name__ == "__main__":
    main()
