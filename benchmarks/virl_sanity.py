"""Does the ViRL machinery learn at all? Run configs/virl.yaml with a trivially learnable reward.

    python -m benchmarks.virl_sanity                        # 16 steps, lr 5e-4, after configs/sft.yaml
    python -m benchmarks.virl_sanity --steps 8 --lr 3e-4

The visual reward is swapped for "shorter answers score higher" (1 - length / 256). Every
other part is the real run: sampler, sandboxed renders, GRPO update, logging. A working
pipeline raises this reward within a few steps; if it does not, the fault is in sampling,
log-probs or the update, not in the visual reward. Prints the mean reward, answer length and
entropy per quarter of the run (from its TensorBoard log under runs/virl-sanity).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from benchmarks.reproduce import retarget

ROOT = Path(__file__).resolve().parents[1]


def shorter_is_better(score):
    """A ViRLModule.score that runs the real one (renders are still waited for, so the timing stays
    that of a real step), then replaces the rewards: 1 - completion length / 256 ([N])."""
    from vinci.reward.format import composite_reward

    def scored(self, rollout):
        score(self, rollout)
        lengths = rollout.completion_mask.sum(dim=1).float()  # [N]
        n = len(lengths)
        rollout.rewards = composite_reward((1 - lengths / 256).clamp(0, 1), torch.ones(n), torch.ones(n, dtype=torch.bool),
                                           format_weight=0.0)
        return rollout.rewards

    return scored


def quarters(values: list[float]) -> list[float]:
    q = max(1, len(values) // 4)
    return [sum(values[i * q : (i + 1) * q]) / len(values[i * q : (i + 1) * q]) for i in range(4) if values[i * q : (i + 1) * q]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args(argv)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from main import cli_main
    from vinci.virl import ViRLModule

    out = (ROOT / args.out).resolve()
    config = retarget(yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text()), out, "virl-sanity")
    config["trainer"]["max_steps"] = args.steps
    config["model"]["init_args"]["optimizer"]["init_args"]["lr"] = args.lr
    path = out / "virl-sanity.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    ViRLModule.score = shorter_is_better(ViRLModule.score)
    cli = cli_main(["fit", "--config", str(path)])
    events = EventAccumulator(cli.trainer.logger.log_dir)
    events.Reload()
    print("| scalar | " + " | ".join(f"quarter {i + 1}" for i in range(4)) + " |")
    print("|---|---|---|---|---|")
    for tag in ("reward/overall_mean", "response/length_mean", "train/entropy"):
        values = [e.value for e in events.Scalars(tag)]
        print(f"| {tag} | " + " | ".join(f"{v:.3f}" for v in quarters(values)) + " |")


if __name__ == "__main__":
    main()
