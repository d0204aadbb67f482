"""Reward throughput for one GRPO step: vinci's batched, deduplicated scoring vs the naive way.

A step scores B prompts x G rollouts. The naive way scores one pair at a time and encodes both
images of every rendered rollout (the reference G times). vinci's `visual_reward` cuts and encodes
each distinct image once per call (the group's reference once, identical renders once) and sends
all crops through the encoder in batched passes. Both give the same scores (checked below).

Two rollout mixes per group of G = 8, from the real charts in ../shared/corpora/chart:
- distinct: 8 different near-miss renders (the worst case for deduplication);
- typical:  5 different renders, 2 repeats of one of them (the policy sampled the same program)
            and 1 failed render.

    python -m benchmarks.reward_throughput                  # pixel + tiny timm, B = 4, G = 8
    python -m benchmarks.reward_throughput --encoders pixel vit-s --prompts 2

Encoders: pixel (weight-free), tiny-timm (2-block DINOv2-architecture ViT at 56 px, random
weights), vit-s (DINOv2-S architecture at 224 px, random weights: the encoder cost of a real model).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.reward_auc import load_charts, perturb
from vinci.reward.encoders import CropEncoder, PixelEncoder, TimmEncoder
from vinci.reward.similarity import visual_reward
from vinci.reward.tiling import crops

RANDOM_VITS = {
    "tiny-timm": (
        "vit_large_patch14_dinov2.lvd142m",
        dict(depth=2, embed_dim=48, num_heads=3, img_size=56, init_values=1.0),
    ),
    "vit-s": ("vit_small_patch14_dinov2.lvd142m", dict(img_size=224)),
}


class Counting(CropEncoder):
    """Wraps an encoder and counts the crops and passes it is asked to embed."""

    def __init__(self, inner: CropEncoder) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.crops = 0
        self.passes = 0

    def embed(self, batch):
        self.crops += len(batch)
        self.passes += 1
        return self.inner.embed(batch)


def random_vit(name: str, folder: Path) -> TimmEncoder:
    """A timm ViT with seeded random weights, saved and loaded through the real weights-file path."""
    import timm

    model_name, kwargs = RANDOM_VITS[name]
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return TimmEncoder(model_name, weights=path, **kwargs)


def naive_reward(renders, references, encoder: CropEncoder) -> torch.Tensor:
    """One pair at a time: resize, cut and encode both images of every rendered rollout."""
    scores = []
    for render, reference in zip(renders, references):
        if render is None:
            scores.append(0.0)
            continue
        render = render.convert("RGB").resize(reference.size, Image.Resampling.BICUBIC)
        a = encoder.embed(crops(render))  # [C, D]
        b = encoder.embed(crops(reference))  # [C, D]
        scores.append(((F.cosine_similarity(a, b, dim=-1) + 1) / 2).mean().item())
    return torch.tensor(scores)


def rollouts(charts: list[Image.Image], prompts: int, group: int, mix: str, seed: int = 0):
    """Renders [B*G] (None = failed) and references [B*G] (the group's reference object repeated)."""
    rng = random.Random(seed)
    renders, references = [], []
    for chart in charts[:prompts]:
        if mix == "distinct":
            group_renders = [perturb(chart, rng) for _ in range(group)]
        else:
            distinct = [perturb(chart, rng) for _ in range(group - 3)]
            group_renders = distinct + [distinct[0], distinct[0], None]
        renders += group_renders
        references += [chart] * group
    return renders, references


def measure(fn, encoder: Counting, renders, references):
    """(scores, crops encoded, encoder passes, CPU seconds) of one scoring call.

    CPU time of this process, not wall time: with one torch thread it is the work done, and it
    does not count time lost to other programs on a shared machine."""
    encoder.crops = encoder.passes = 0
    start = time.process_time()
    scores = fn(renders, references, encoder)
    return scores, encoder.crops, encoder.passes, time.process_time() - start


def compare(encoder: Counting, renders, references, repeats: int):
    """Naive and vinci runs interleaved `repeats` times; the fastest run of each is kept
    (the minimum is the figure least disturbed by other load on the machine)."""
    best = {}
    for _ in range(repeats):
        for way, fn in (("naive", naive_reward), ("vinci", visual_reward)):
            run = measure(fn, encoder, renders, references)
            if way not in best or run[3] < best[way][3]:
                best[way] = run
    return best["naive"], best["vinci"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoders", nargs="+", default=["pixel", "tiny-timm"], help="pixel, tiny-timm, vit-s"
    )
    parser.add_argument("--prompts", type=int, default=4, help="B: prompts per step")
    parser.add_argument("--group", type=int, default=8, help="G: rollouts per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU time = work)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    charts = load_charts(limit=max(args.prompts, 2))
    threads = torch.get_num_threads()
    print(f"B={args.prompts} x G={args.group} rollouts, {threads} torch thread(s); pairs/s per CPU second")
    header = (
        f"{'encoder':<10} {'mix':<9} {'way':<6} {'crops':>6} {'passes':>7} {'pairs/s':>8} "
        f"{'crops ratio':>11} {'speed-up':>9} {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders:
            inner = PixelEncoder() if name == "pixel" else random_vit(name, Path(tmp))
            encoder = Counting(inner)
            for mix in ("distinct", "typical"):
                renders, references = rollouts(charts, args.prompts, args.group, mix)
                pairs = len(renders)
                naive, ours = compare(encoder, renders, references, args.repeats)
                diff = (naive[0] - ours[0]).abs().max().item()
                for way, (_, n_crops, passes, seconds) in (("naive", naive), ("vinci", ours)):
                    extra = ""
                    if way == "vinci":
                        extra = f"{naive[1] / n_crops:>10.2f}x {naive[3] / seconds:>8.2f}x {diff:>10.1e}"
                    row = f"{name:<10} {mix:<9} {way:<6} {n_crops:>6} {passes:>7} {pairs / seconds:>8.1f}"
                    print(f"{row} {extra}")


if __name__ == "__main__":
    main()
