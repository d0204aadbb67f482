"""Does a policy look at its inputs? Answer loss with the true prompt against swapped ones.

    python -m benchmarks.conditioning                                   # runs/sft/adapter on the SFT test split
    python -m benchmarks.conditioning --adapter runs/virl/adapter --limit 200

ViRL can only improve what a policy does *for a given image*: if its answers do not depend on
the image (or, in refinement rows, on the code to fix), every prompt of a language gets the same
distribution of programs and GRPO has nothing prompt-specific to rank. This script measures
that dependence directly. For each held-out SFT row it computes the teacher-forced loss of the
reference answer (nats per answer token) three ways:

    true       the row's own image and prompt
    image      the image of another row of the same language and task
    code       refinement rows only: the flawed code of another row of the same language

and prints, per language, the mean loss and the paired increase under each swap with a 95%
bootstrap interval. A policy that uses its inputs shows clear positive increases; increases
near 0 mean the policy writes the language's typical program whatever it is shown.

The model loads as `main.py test` loads it (`vinci.backbone.load_backbone`, for inference), and
the intervals are `vinci.eval.compare.bootstrap_diff`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from vinci.eval.compare import bootstrap_diff


def load_policy(model: str, adapter: str | None):
    """(model, processor) in eval mode: the base with the adapter applied (None or "": the base alone)."""
    from vinci.backbone import Backbone, load_backbone

    net, processor = load_backbone(Backbone(model=model, adapter=adapter or None), trainable=False)
    return net.eval(), processor


def answer_losses(net, processor, examples, batch_size: int = 8) -> list[float]:
    """Mean answer-token loss of each example [n] (teacher forcing, no grad)."""
    import torch

    from vinci.data.collate import IGNORE, SFTCollator

    collate = SFTCollator(processor)
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size])
            logits = net(**batch.inputs).logits[:, :-1].float()  # [b, T-1, V] predicting tokens 1..T-1
            labels = batch.labels[:, 1:]  # [b, T-1]
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")  # [b, T-1]
            mask = (labels != IGNORE).float()  # [b, T-1]
            out += (loss * mask).sum(1).div(mask.sum(1).clamp(min=1)).tolist()
    return out


def swapped(examples, meta, field: str, rng: random.Random):
    """Each example with `field` (image or prompt) taken from another row of the same language and task."""
    groups = defaultdict(list)
    for i, row in enumerate(meta):
        groups[(row["language"], row["task"])].append(i)
    out = []
    for i, row in enumerate(meta):
        others = [j for j in groups[(row["language"], row["task"])] if j != i]
        donor = examples[rng.choice(others)] if others else examples[i]
        out.append(replace(examples[i], **{field: getattr(donor, field)}))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default="runs/sft/adapter")
    parser.add_argument("--model", default="artifacts/tiny-vlm")
    parser.add_argument("--rows", default="artifacts/synth/sft_test.jsonl", help="SFT rows with language and task columns")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from vinci.data.rows import read_rows

    rowset = read_rows(args.rows, schema="sft", min_pixels=56 * 56, max_pixels=224 * 224)
    meta = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    if len(meta) != len(rowset) or any("language" not in m or "task" not in m for m in meta):
        sys.exit(f"{args.rows}: needs one row per line with 'language' and 'task' columns (a synthetic corpus split)")
    n = min(args.limit, len(meta)) if args.limit else len(meta)
    examples, meta = [rowset[i] for i in range(n)], meta[:n]
    net, processor = load_policy(args.model, args.adapter)
    rng = random.Random(args.seed)
    true = answer_losses(net, processor, examples)
    image = answer_losses(net, processor, swapped(examples, meta, "image", rng))
    refine = [i for i, m in enumerate(meta) if m["task"] == "refine"]
    code_swapped = swapped(examples, meta, "prompt", rng)  # a refine row's prompt holds its flawed code
    code = dict(zip(refine, answer_losses(net, processor, [code_swapped[i] for i in refine])))

    print(f"adapter {args.adapter}, {len(examples)} rows of {args.rows}; loss in nats per answer token")
    print(f"{'domain':<8} {'n':>4} {'true':>6} {'image swapped - true [95% CI]':>34} {'n_ref':>5} {'code swapped - true [95% CI]':>34}")
    for language in sorted({m["language"] for m in meta}) + ["all"]:
        rows = [i for i, m in enumerate(meta) if language in ("all", m["language"])]
        refs = [i for i in rows if i in code]
        d_img = bootstrap_diff([true[i] for i in rows], [image[i] for i in rows])
        d_code = bootstrap_diff([true[i] for i in refs], [code[i] for i in refs]) if len(refs) > 1 else None
        cell = lambda d: f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "-"  # noqa: E731
        mean = sum(true[i] for i in rows) / len(rows)
        print(f"{language:<8} {len(rows):>4} {mean:>6.3f} {cell(d_img):>34} {len(refs):>5} {cell(d_code):>34}")


if __name__ == "__main__":
    main()
