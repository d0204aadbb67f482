"""Fixtures for the reward tests: a tiny DINOv2-architecture timm model and test images.

The timm model has seeded random weights, written to a temporary file by the test session and
loaded back through `TimmEncoder`'s real weights-file path; nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from vinci.reward.encoders import TimmEncoder

MODEL = "vit_large_patch14_dinov2.lvd142m"
# 2 blocks, width 48, 56 px input; layer scale 1.0 so that random blocks actually mix tokens.
TINY = dict(depth=2, embed_dim=48, num_heads=3, img_size=56, init_values=1.0)


@dataclass(frozen=True)
class TinyWeights:
    path: Path
    state: dict[str, torch.Tensor]
    kwargs: dict


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> TinyWeights:
    import timm

    torch.manual_seed(1234)
    model = timm.create_model(MODEL, pretrained=False, **TINY)
    torch.nn.init.normal_(model.cls_token, std=0.02)  # timm starts it near zero
    path = tmp_path_factory.mktemp("tiny_dinov2") / "tiny_dinov2.pth"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return TinyWeights(path, state, dict(TINY))


@pytest.fixture(scope="session")
def tiny_timm(tiny_weights) -> TimmEncoder:
    return TimmEncoder(MODEL, weights=tiny_weights.path, **tiny_weights.kwargs)


@pytest.fixture(scope="session")
def chart(corpora) -> Image.Image:
    """A real ChartMimic reference render (wider than tall: a multi-tile grid)."""
    return Image.open(corpora / "chart" / "CB_1.png").convert("RGB")


BAR_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def bar_chart(
    size: tuple[int, int] = (640, 480),
    heights: tuple[float, ...] = (0.8, 0.55, 0.35, 0.7, 0.5, 0.9),
    colours: list[tuple[int, int, int]] | None = None,
    drop: int = 0,
    shift: int = 0,
) -> Image.Image:
    """A bar chart drawn with PIL: axes, ticks and bars; `drop` removes the last bars."""
    colours = colours or BAR_COLOURS
    w, h = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, bottom, top = 60 + shift, h - 50, 30
    draw.line([(left, top), (left, bottom), (w - 20 + shift, bottom)], fill="black", width=2)
    for k in range(5):
        y = bottom - k * (bottom - top) // 5
        draw.line([(left - 6, y), (left, y)], fill="black", width=2)
    slot = (w - 20 - 60) // len(heights)
    for i, height in enumerate(heights[: len(heights) - drop]):
        x0 = left + i * slot + slot // 5
        y0 = bottom - int(height * (bottom - top))
        draw.rectangle([x0, y0, x0 + slot * 3 // 5, bottom - 1], fill=colours[i])
    return image
