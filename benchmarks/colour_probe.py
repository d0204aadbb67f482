"""Can a freshly adapted tiny VLM learn to read its image at all? A one-token probe.

    python -m benchmarks.colour_probe                       # lr 1e-3 and 3e-3 (configs/sft.yaml's), vision at 1x and 0.1x
    python -m benchmarks.colour_probe --lrs 3e-3 --vision-lr-scales 1 0.1 0.03 --steps 600

Every example is the same SVG program, a square on a white canvas, except for the square's
colour, one of the corpus's 10 colour names; the image is that program's picture. The only
thing to learn beyond the template is to read one colour off the image. Each pair of learning
rate and vision-tower share (`vision_lr_scale`: the vision tower's rate is lr x scale) starts
from fresh LoRA layers with the settings of `configs/sft.yaml` (rank 64, vision tower adapted,
embeddings trained, gradient norm clipped at 1) and trains at a constant rate.

Printed per setting: the mean training loss of the last 25 steps (nats per answer token;
a model that ignores the image cannot go below ln(10) / answer tokens, printed as the floor)
and how many of the 10 colours it names, i.e. gives its lowest loss to the right colour among
all 10 answers (teacher forcing on the same image).
"""

from __future__ import annotations

import argparse
import math
import random
import time

from benchmarks.conditioning import answer_losses
from vinci.data.synth.vocab import COLORS

PROMPT = "<image>Write the svg code that draws this image."
SQUARE = (40, 40, 48)  # x, y, side in px on the 128 px canvas


def program(colour: str) -> str:
    x, y, side = SQUARE
    return (
        '```svg\n<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128">\n'
        f'<rect x="{x}" y="{y}" width="{side}" height="{side}" fill="{colour}"/>\n</svg>\n```'
    )


def picture(colour: str):
    from PIL import Image, ImageColor

    x, y, side = SQUARE
    image = Image.new("RGB", (128, 128), "white")
    image.paste(ImageColor.getrgb(colour), (x, y, x + side, y + side))
    return image


def example(colour: str, answer_colour: str | None = None):
    from vinci.data.rows import Example

    return Example(picture(colour), PROMPT, "svg", program(answer_colour or colour), f"probe:{colour}")


def probe(model_dir: str, lr: float, steps: int, batch_size: int, seed: int, vision_lr_scale: float = 1.0) -> dict:
    import torch

    from vinci.backbone import Backbone, Lora, load_backbone, trainable_split
    from vinci.data.collate import SFTCollator

    torch.manual_seed(seed)
    rng = random.Random(seed)
    lora = Lora(r=64, alpha=64, dropout=0.0, vision="lora", modules_to_save=["embed_tokens"])  # as configs/sft.yaml
    model, processor = load_backbone(Backbone(model=model_dir, dtype="float32", lora=lora))
    collator = SFTCollator(processor)
    language, vision = trainable_split(model)
    params = language + vision
    groups = [{"params": language, "lr": lr}, {"params": vision, "lr": lr * vision_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    started, losses = time.perf_counter(), []
    model.train()
    for _ in range(steps):
        batch = collator([example(rng.choice(COLORS)) for _ in range(batch_size)])
        loss = model(**batch.inputs, labels=batch.labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    named = 0
    for colour in COLORS:
        candidates = answer_losses(model, processor, [example(colour, other) for other in COLORS], batch_size=10)  # [10]
        named += COLORS[candidates.index(min(candidates))] == colour
    answer_tokens = int((collator([example(COLORS[0])]).labels != -100).sum())
    tail = losses[-25:]
    return {
        "lr": lr,
        "vision_lr_scale": vision_lr_scale,
        "steps": steps,
        "loss": sum(tail) / max(1, len(tail)),
        "floor": math.log(len(COLORS)) / answer_tokens,
        "named": named,
        "seconds": time.perf_counter() - started,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="artifacts/tiny-vlm", help="the tiny VLM (built when missing)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--vision-lr-scales", type=float, nargs="+", default=[1.0, 0.1],
                        help="vision-tower learning rate as a share of lr (each lr runs with each)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from vinci.backbone import Backbone, ensure_model

    ensure_model(Backbone(model=args.model, embedded=True))
    rows = [probe(args.model, lr, args.steps, args.batch_size, args.seed, scale)
            for lr in args.lrs for scale in args.vision_lr_scales]
    print(f"colour probe: {args.steps} steps of {args.batch_size}, {len(COLORS)} colours")
    print("| lr | vision lr scale | loss (last 25 steps) | floor without the image | colours named | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['lr']:g} | {row['vision_lr_scale']:g} | {row['loss']:.3f} | {row['floor']:.3f} "
              f"| {row['named']}/{len(COLORS)} | {row['seconds']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
