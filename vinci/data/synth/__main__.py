"""Command line: ``python -m vinci.data.synth --out DIR --seed 0`` builds the synthetic corpus."""

from __future__ import annotations

import argparse
import logging

from vinci import tasks
from vinci.data.synth.corpus import build_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vinci.data.synth", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (absent, empty, or a previous corpus)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same corpus")
    parser.add_argument("--n-train", type=int, default=300, help="train programs per language")
    parser.add_argument("--n-val", type=int, default=25, help="validation programs per language")
    parser.add_argument("--n-test", type=int, default=50, help="test programs per language")
    parser.add_argument("--languages", nargs="+", default=list(tasks.LANGUAGES), help="subset of languages")
    parser.add_argument("--refine-fraction", type=float, default=0.25,
                        help="share of programs that also get a visual-refinement row")
    parser.add_argument("--workers", type=int, default=2, help="render workers per kind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_corpus(args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                 languages=args.languages, refine_fraction=args.refine_fraction, workers=args.workers)


if __name__ == "__main__":
    main()
