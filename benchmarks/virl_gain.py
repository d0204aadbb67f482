"""Does ViRL beat SFT-only? Held-out reward of both adapters, paired, with a bootstrap interval.

    python -m benchmarks.virl_gain                       # after configs/sft.yaml and configs/virl.yaml
    python -m benchmarks.virl_gain --samples 4           # 4 sampled answers per prompt instead of greedy
    python -m benchmarks.virl_gain --samples 4 --temperature 0.7   # ... at the rollout temperature of configs/virl.yaml

Each held-out prompt of the synthetic corpus's RL test split is answered by the SFT adapter
and by the ViRL adapter through `main.py predict --config configs/eval.yaml`
(`benchmarks.heldout`), rendered and scored with the training reward. The table gives format
rate, render rate, visual and overall reward per domain; the last line is the mean paired
difference (ViRL - SFT) of the overall reward over the prompts both answered (matched by id),
with its 95% bootstrap interval (`vinci.eval.compare`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.heldout import run
from vinci.eval.compare import bootstrap_diff, format_table, paired


def gain_line(a: list[float], b: list[float]) -> str:
    """The verdict line: mean paired gain b - a with its 95% interval."""
    mean, low, high = bootstrap_diff(a, b)
    verdict = "excludes 0" if low > 0 or high < 0 else "includes 0"
    return f"reward gain (virl - sft): {mean:+.4f}  95% CI [{low:+.4f}, {high:+.4f}]  ({verdict}, n={len(a)})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", default="runs/sft/adapter")
    parser.add_argument("--virl", default="runs/virl/adapter")
    parser.add_argument("--model", default="artifacts/tiny-vlm")
    parser.add_argument("--rows", default="artifacts/synth/rl_test.jsonl")
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--samples", type=int, default=0, help="0: greedy; K: mean of K sampled answers per prompt")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature with --samples")
    parser.add_argument("--out", default="runs/virl_gain", help="where each run's predictions, renders, report and config go")
    args = parser.parse_args(argv)  # logging is set up by cli_main, as for `main.py predict`
    for name in ("sft", "virl"):
        if not Path(getattr(args, name)).exists():
            parser.error(f"no {name} adapter at {getattr(args, name)}: run configs/{name}.yaml first")
    if not Path(args.rows).exists():
        parser.error(f"no rows at {args.rows}: run configs/sft.yaml first (it builds the synthetic corpus)")

    results, tables = run({"sft": args.sft, "virl": args.virl}, args.model, args.rows, args.max_new_tokens, args.limit, 2,
                          args.samples, args.temperature, args.out)
    print(format_table(tables))
    print("\n" + gain_line(*paired(results["sft"], results["virl"])))


if __name__ == "__main__":
    main()
