"""Does ViRL beat SFT-only? Held-out reward of both adapters, paired, with a bootstrap interval.

    python benchmarks/virl_gain.py                       # after configs/sft.yaml and configs/virl.yaml
    python benchmarks/virl_gain.py --samples 4           # 4 sampled answers per prompt instead of greedy
    python benchmarks/virl_gain.py --samples 4 --temperature 0.7   # ... at the rollout temperature of configs/virl.yaml

Each held-out prompt of the synthetic corpus's RL test split is answered by the SFT adapter
and by the ViRL adapter, rendered and scored with the training reward. The table gives format
rate, render rate, visual and overall reward per domain; the last line is the mean paired
difference (ViRL - SFT) of the overall reward with its 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vinci.evaluate import bootstrap_diff, format_table  # noqa: E402


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("sft", "virl"):
        if not (Path(getattr(args, name)) / "adapter_config.json").is_file():
            parser.error(f"no {name} adapter at {getattr(args, name)}: run configs/{name}.yaml first")

    from benchmarks.heldout import run

    results, tables = run({"sft": args.sft, "virl": args.virl}, args.model, args.rows, args.max_new_tokens, args.limit, 2, args.samples, args.temperature)
    print(format_table(tables))
    mean, low, high = bootstrap_diff(results["sft"].overall, results["virl"].overall)
    verdict = "excludes 0" if low > 0 or high < 0 else "includes 0"
    print(f"\nreward gain (virl - sft): {mean:+.4f}  95% CI [{low:+.4f}, {high:+.4f}]  ({verdict}, n={len(results['sft'].overall)})")


if __name__ == "__main__":
    main()
