"""How well the visual reward separates a near-miss render from a wrong chart (ROC AUC).

On the human-made charts in ../shared/corpora/chart (ChartMimic reference renders):
- positive pair: a chart's lightly perturbed copy vs the chart. The perturbation is seeded per
  chart: a shift of up to 6 px on a white page, brightness/contrast/saturation within +-8 %, a
  0.6 px Gaussian blur and a JPEG (quality 80) round trip;
- negative pair: a different chart of the corpus vs the chart (resized to its size, as any render).
AUC is the probability that a positive pair outscores a negative one (ties count half).

    python -m benchmarks.reward_auc                       # pixel encoder, every chart
    python -m benchmarks.reward_auc --encoders pixel tiny-timm --negatives 5

"tiny-timm" is a 2-block DINOv2-architecture ViT with seeded random weights, written to a
temporary file and loaded through the real timm path: it checks the wiring, not DINOv2's quality.
"timm:<name>" uses a real model whose weights are in the local Hugging Face cache.
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from vinci.reward.encoders import CropEncoder, TimmEncoder, build_encoder
from vinci.reward.similarity import patch_similarity

ROOT = Path(__file__).resolve().parents[1]

CHARTS = ROOT.parent / "shared" / "corpora" / "chart"
TINY_DINOV2 = dict(depth=2, embed_dim=48, num_heads=3, img_size=56, init_values=1.0)


def perturb(image: Image.Image, rng: random.Random) -> Image.Image:
    """A lightly perturbed copy: small shift, colour jitter, slight blur, JPEG round trip."""
    image = image.convert("RGB")
    dx, dy = rng.randint(-6, 6), rng.randint(-6, 6)
    page = Image.new("RGB", image.size, (255, 255, 255))
    page.paste(image, (dx, dy))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        page = enhance(page).enhance(rng.uniform(0.92, 1.08))
    page = page.filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def load_charts(folder: Path = CHARTS, limit: int | None = None) -> list[Image.Image]:
    paths = sorted(folder.glob("*.png"))[:limit]
    if len(paths) < 2:
        raise FileNotFoundError(f"need at least 2 chart PNGs in {folder}")
    return [Image.open(p).convert("RGB") for p in paths]


def auc(positives: list[float], negatives: list[float]) -> float:
    """Mann-Whitney estimate of P(positive > negative), ties counted half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def separation(
    charts: list[Image.Image], encoder: str | CropEncoder, negatives: int = 3, seed: int = 0
) -> dict[str, float]:
    """AUC and mean scores of perturbed-copy pairs vs different-chart pairs."""
    rng = random.Random(seed)
    preds, targets, is_positive = [], [], []
    for i, chart in enumerate(charts):
        preds.append(perturb(chart, rng))
        targets.append(chart)
        is_positive.append(True)
        others = [j for j in range(len(charts)) if j != i]
        for j in rng.sample(others, min(negatives, len(others))):
            preds.append(charts[j])
            targets.append(chart)
            is_positive.append(False)
    start = time.perf_counter()
    scores = patch_similarity(preds, targets, encoder).tolist()
    seconds = time.perf_counter() - start
    pos = [s for s, p in zip(scores, is_positive) if p]
    neg = [s for s, p in zip(scores, is_positive) if not p]
    return dict(
        auc=auc(pos, neg),
        pos_mean=sum(pos) / len(pos),
        neg_mean=sum(neg) / len(neg),
        pos_min=min(pos),
        neg_max=max(neg),
        n_pos=len(pos),
        n_neg=len(neg),
        seconds=seconds,
    )


def tiny_timm_encoder(folder: Path, seed: int = 0) -> TimmEncoder:
    """The seeded tiny DINOv2-architecture ViT, saved to folder and loaded through the real path."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("vit_large_patch14_dinov2.lvd142m", pretrained=False, **TINY_DINOV2)
    torch.nn.init.normal_(model.cls_token, std=0.02)  # timm starts it near zero: CLS would be constant
    path = folder / "tiny_dinov2.pth"
    torch.save(model.state_dict(), path)
    return TimmEncoder(weights=path, **TINY_DINOV2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=["pixel"], help="pixel, tiny-timm, timm:<name>")
    parser.add_argument("--limit", type=int, default=None, help="first N charts only (default: all)")
    parser.add_argument("--negatives", type=int, default=3, help="different charts per chart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    charts = load_charts(limit=args.limit)
    print(f"{len(charts)} charts from {CHARTS.relative_to(ROOT.parent)}, {args.negatives} negatives each")
    header = (
        f"{'encoder':<12} {'AUC':>6} {'pos mean':>9} {'neg mean':>9} {'pos min':>8} {'neg max':>8} "
        f"{'pairs':>6} {'s':>6}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders:
            encoder = tiny_timm_encoder(Path(tmp), args.seed) if name == "tiny-timm" else build_encoder(name)
            r = separation(charts, encoder, args.negatives, args.seed)
            print(
                f"{name:<12} {r['auc']:>6.3f} {r['pos_mean']:>9.3f} {r['neg_mean']:>9.3f} "
                f"{r['pos_min']:>8.3f} {r['neg_max']:>8.3f} {r['n_pos'] + r['n_neg']:>6} {r['seconds']:>6.1f}"
            )


if __name__ == "__main__":
    main()
