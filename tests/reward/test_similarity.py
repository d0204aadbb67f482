"""patch_similarity / visual_reward: scores, monotonicity, weights, dedup, and a reference check."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from vinci.reward.encoders import CropEncoder, PixelEncoder
from vinci.reward.similarity import crop_weights, patch_similarity, visual_reward
from vinci.reward.tiling import crop_count, crops

from .conftest import BAR_COLOURS, bar_chart

ROOT = Path(__file__).resolve().parents[2]


class Counting(CropEncoder):
    """Counts the crops and passes an inner encoder is asked for."""

    def __init__(self, inner: CropEncoder) -> None:
        super().__init__()
        self.inner, self.crops, self.passes = inner, 0, 0

    def embed(self, batch):
        self.crops += len(batch)
        self.passes += 1
        return self.inner.embed(batch)


def reference_score(pred, target, encoder, global_weight=None, tile_size=448, max_tiles=12):
    """The method written out for one pair, with no batching or dedup."""
    pred = pred.convert("RGB").resize(target.size, Image.Resampling.BICUBIC)
    a = encoder.embed(crops(pred, tile_size, max_tiles))  # [C, D]
    b = encoder.embed(crops(target, tile_size, max_tiles))  # [C, D]
    per_crop = (F.cosine_similarity(a, b, dim=-1) + 1) / 2  # [C]
    if len(per_crop) == 1 or global_weight is None:
        return per_crop.mean().item()
    return global_weight * per_crop[-1].item() + (1 - global_weight) * per_crop[:-1].mean().item()


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    page = Image.new("RGB", image.size, "white")
    page.paste(image, (dx, dy))
    return page


def test_identical_images_score_one(chart, tiny_timm):
    images = [chart, bar_chart(), Image.new("RGB", (1, 1), "red"), Image.new("RGB", (3000, 200), "white")]
    copies = [im.copy() for im in images] + [chart.convert("RGBA")]
    for encoder in ("pixel", tiny_timm):
        scores = patch_similarity(copies, images + [chart], encoder)
        assert torch.allclose(scores, torch.ones(len(copies)), atol=1e-4), (encoder, scores)


def strictly_falling(scores: torch.Tensor) -> bool:
    return bool((scores[1:] < scores[:-1]).all())


def test_score_falls_with_shift(chart):
    steps = [0, 2, 4, 8, 16, 32]
    scores = patch_similarity([shifted(chart, s, s) for s in steps], [chart] * len(steps), "pixel")
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert strictly_falling(scores), scores


def test_score_falls_with_colour_change():
    base = bar_chart()
    target = (255, 0, 255)
    renders = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        colours = [tuple(round((1 - t) * c + t * m) for c, m in zip(rgb, target)) for rgb in BAR_COLOURS]
        renders.append(bar_chart(colours=colours))
    scores = patch_similarity(renders, [base] * len(renders), "pixel")
    assert strictly_falling(scores), scores


def test_score_falls_with_removed_elements():
    base = bar_chart()
    scores = patch_similarity([bar_chart(drop=k) for k in range(5)], [base] * 5, "pixel")
    assert strictly_falling(scores), scores


def test_tiny_timm_runs_the_whole_path(chart, tiny_timm):
    renders = [chart, shifted(chart, 8, 8), ImageOps.invert(chart)]
    scores = patch_similarity(renders, [chart] * 3, tiny_timm)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[0] > scores[1] > scores[2]
    expected = [reference_score(r, chart, tiny_timm) for r in renders]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("global_weight", [None, 0.0, 0.3, 1.0])
def test_matches_the_per_pair_reference(chart, global_weight):
    encoder = PixelEncoder()
    other = bar_chart(size=(900, 300))
    preds = [shifted(chart, 5, 0), other, bar_chart(size=(320, 240)), chart.resize((400, 300))]
    targets = [chart, chart, other, Image.new("RGB", (200, 150), "white")]
    tile = 448 if global_weight is None else 224  # the default, then a cheaper non-default size
    scores = patch_similarity(preds, targets, encoder, global_weight=global_weight, tile_size=tile)
    expected = [reference_score(p, t, encoder, global_weight, tile) for p, t in zip(preds, targets)]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)


def test_cutting_on_threads_gives_the_serial_scores(chart, monkeypatch):
    from vinci.reward import similarity

    encoder = PixelEncoder()
    preds = [shifted(chart, k, 0).resize((400, 300)) for k in range(1, 6)] + [bar_chart(size=(300, 500))]
    targets = [chart.resize((400, 300))] * 5 + [bar_chart(size=(200, 330))]
    monkeypatch.setattr(similarity.os, "cpu_count", lambda: 4)
    scores = {}
    for threads in (1, 4):
        monkeypatch.setattr(similarity, "CUT_THREADS", threads)
        scores[threads] = patch_similarity(preds, targets, encoder, tile_size=224)
    assert torch.equal(scores[1], scores[4])
    assert len(set(scores[1].tolist())) == len(preds)  # distinct pairs: a mix-up would show


def test_non_default_tiles(chart):
    encoder = PixelEncoder()
    pred = shifted(chart, 6, 3)
    score = patch_similarity([pred], [chart], encoder, tile_size=224, max_tiles=4)
    assert score.item() == pytest.approx(reference_score(pred, chart, encoder, None, 224, 4), abs=1e-5)


def test_global_weight_picks_coarse_or_fine(chart):
    encoder = Counting(PixelEncoder())
    pred = shifted(chart, 12, 0)
    n = crop_count(*chart.size)
    coarse = patch_similarity([pred], [chart], encoder, global_weight=1.0)
    assert encoder.crops == 2  # only the two thumbnails are encoded
    resized = pred.resize(chart.size, Image.Resampling.BICUBIC)
    thumbs = PixelEncoder().embed([crops(resized)[-1], crops(chart)[-1]])  # [2, D]
    expected = (F.cosine_similarity(thumbs[:1], thumbs[1:]).item() + 1) / 2
    assert coarse.item() == pytest.approx(expected, abs=1e-5)
    encoder.crops = 0
    patch_similarity([pred], [chart], encoder, global_weight=0.0)
    assert encoder.crops == 2 * (n - 1)  # tiles only
    assert crop_weights(1, 1, 0.7) == [1.0]  # a 1x1 grid's single crop is both coarse and fine
    assert crop_weights(2, 1, None) == pytest.approx([1 / 3] * 3)
    assert crop_weights(2, 1, 0.4) == pytest.approx([0.3, 0.3, 0.4])


def test_group_reference_and_identical_renders_are_encoded_once(chart):
    chart = chart.resize((495, 395), Image.Resampling.BICUBIC)  # smaller: cheaper, same 4x3 grid
    encoder = Counting(PixelEncoder())
    other = bar_chart(size=chart.size)
    group = [shifted(chart, k, 0) for k in range(1, 6)]  # 5 distinct renders
    renders = group + [group[0].copy(), group[0], chart.copy()]  # 2 repeats + a perfect render
    references = [chart] * 7 + [chart.copy()]  # the shared reference, once as an equal copy
    scores = patch_similarity(renders + [other], references + [other], encoder, batch_size=16, tile_size=224)
    n = crop_count(*chart.size, tile_size=224)
    assert encoder.crops == n * (1 + 5) + n  # reference + 5 distinct renders; `other` once for both
    assert encoder.passes == math.ceil(encoder.crops / 16)
    assert scores[5] == scores[6] == scores[0] and scores[7] == pytest.approx(1.0, abs=1e-6)
    naive = [reference_score(r, t, PixelEncoder(), tile_size=224) for r, t in zip(renders, references)]
    assert torch.allclose(scores[:8], torch.tensor(naive), atol=1e-5)


def test_render_is_resized_to_the_reference(chart):
    big = chart.resize((chart.width * 2, chart.height * 2), Image.Resampling.BICUBIC)
    scores = patch_similarity([big, big.resize(chart.size, Image.Resampling.BICUBIC)], [chart, chart])
    assert scores[0] == pytest.approx(scores[1].item(), abs=1e-6) and scores[0] > 0.97


def test_scores_stay_in_range_and_blank_renders_score_low(chart):
    blank = Image.new("RGB", (5, 5), "white")
    scores = patch_similarity(
        [ImageOps.invert(chart), Image.new("RGB", chart.size, "black"), blank, shifted(chart, 16, 16)],
        [chart, Image.new("RGB", (50, 50), "white"), chart, chart],
    )
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[1] == pytest.approx(0.5, abs=0.01)  # flat black vs flat white: nothing shared, cos 0
    assert scores[2] < scores[3] - 0.1  # a blank page is well below a copy shifted by 16 px


def test_bad_arguments_raise(chart):
    with pytest.raises(ValueError, match="targets"):
        patch_similarity([chart], [chart, chart])
    with pytest.raises(ValueError, match="PIL"):
        patch_similarity([chart, "x.png"], [chart, chart])
    for bad in (dict(global_weight=1.5), dict(tile_size=0), dict(max_tiles=0), dict(batch_size=0)):
        with pytest.raises(ValueError):
            patch_similarity([chart], [chart], **bad)
    with pytest.raises(ValueError, match="unknown encoder"):
        patch_similarity([chart], [chart], "dino")
    assert patch_similarity([], [], "pixel").shape == (0,)


def test_visual_reward_scores_failed_renders_zero(chart):
    encoder = Counting(PixelEncoder())
    scores = visual_reward([None, shifted(chart, 4, 0), None], [chart] * 3, encoder)
    assert scores[0] == 0 and scores[2] == 0 and 0.5 < scores[1] < 1
    assert encoder.crops == 2 * crop_count(*chart.size)  # failed renders are never encoded
    assert visual_reward([None], [chart], encoder).tolist() == [0.0]
    with pytest.raises(ValueError):
        visual_reward([None], [chart, chart], encoder)


def test_chart_corpus_auc(corpora):
    """Lightly perturbed copy vs a different chart, on real ChartMimic charts (a subset: the full
    corpus is `python benchmarks/reward_auc.py`)."""
    spec = importlib.util.spec_from_file_location("reward_auc", ROOT / "benchmarks" / "reward_auc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    charts = bench.load_charts(corpora / "chart", limit=16)
    result = bench.separation(charts, "pixel", negatives=3, seed=0)
    assert result["auc"] >= 0.95, result
    assert result["pos_mean"] > result["neg_mean"] + 0.2
