"""Crop encoders: the weight-free pixel encoder and the timm path (offline weights only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vinci.reward.encoders import (
    DEFAULT_TIMM_MODEL,
    MissingWeightsError,
    PixelEncoder,
    TimmEncoder,
    build_encoder,
    resolve_weights,
)
from vinci.reward.tiling import crops

from .conftest import MODEL, bar_chart


def test_pixel_is_deterministic_unit_norm_and_shaped(chart):
    tiles = crops(chart)
    a = PixelEncoder().embed(tiles)
    b = PixelEncoder().embed([t.copy() for t in tiles])
    assert a.shape == (len(tiles), PixelEncoder().dim) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(len(tiles)), atol=1e-5)
    assert PixelEncoder().embed([]).shape == (0, PixelEncoder().dim)


def test_pixel_flat_crops_are_not_zero_vectors():
    white, black = Image.new("RGB", (448, 448), "white"), Image.new("RGB", (448, 448), "black")
    e = PixelEncoder().embed([white, white.copy(), black])  # [3, D]
    assert F.cosine_similarity(e[0], e[1], dim=0) == pytest.approx(1.0, abs=1e-6)
    assert F.cosine_similarity(e[0], e[2], dim=0) < 0.05  # no structure in either: tone decides


def test_pixel_discriminates_layout_colour_and_edges():
    base = bar_chart()
    variants = [bar_chart(drop=3), bar_chart(colours=[(0, 0, 0)] * 6), bar_chart(shift=40)]
    e = PixelEncoder().embed([base, *variants])  # [4, D]
    cos = F.cosine_similarity(e[:1], e[1:], dim=1)  # [3]
    assert (cos < 0.97).all() and (cos > 0).all()


def test_pixel_rejects_bad_options():
    for bad in (dict(grid=1), dict(noise_floor=0.0), dict(weights=(1.0, -1.0, 0.0)), dict(weights=(1.0,))):
        with pytest.raises(ValueError):
            PixelEncoder(**bad)


def test_timm_loads_the_weights_file(tiny_weights, tiny_timm):
    loaded = tiny_timm.model.state_dict()
    for name, value in tiny_weights.state.items():
        assert torch.equal(loaded[name], value), name
    assert tiny_timm.input_size == (56, 56)  # follows img_size, not the cfg's default 518
    assert torch.allclose(tiny_timm._mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))  # pretrained cfg
    assert not tiny_timm.model.training and all(not p.requires_grad for p in tiny_timm.parameters())
    tiny_timm.train()
    assert not tiny_timm.model.training


def test_timm_embeds_with_cls_or_mean_pooling(tiny_weights, tiny_timm, chart):
    tiles = crops(chart)
    cls = tiny_timm.embed(tiles)
    assert cls.shape == (len(tiles), 48) and cls.dtype == torch.float32
    assert torch.equal(cls, tiny_timm.embed(tiles))  # deterministic (eval mode)
    mean = TimmEncoder(MODEL, weights=tiny_weights.path, pool="mean", **tiny_weights.kwargs).embed(tiles)
    assert mean.shape == cls.shape and not torch.allclose(mean, cls)
    # CLS really is the first token of the final features of the normalised input
    pixels = [np.array(t.resize((56, 56), Image.Resampling.BICUBIC)) for t in tiles[:2]]
    x = torch.from_numpy(np.stack(pixels))  # [2, 56, 56, 3]
    x = (x.permute(0, 3, 1, 2).float() / 255 - tiny_timm._mean) / tiny_timm._std
    with torch.no_grad():
        expected = tiny_timm.model.forward_features(x)[:, 0]
    assert torch.allclose(cls[:2], expected, atol=1e-5)


def test_timm_batches_give_the_same_embeddings(tiny_weights, chart):
    tiles = crops(chart)
    small = TimmEncoder(MODEL, weights=tiny_weights.path, batch_size=3, **tiny_weights.kwargs)
    big = TimmEncoder(MODEL, weights=tiny_weights.path, batch_size=64, **tiny_weights.kwargs)
    assert torch.allclose(small.embed(tiles), big.embed(tiles), atol=1e-5)


def test_timm_reads_the_hugging_face_cache(tiny_weights, tmp_path):
    from safetensors.torch import save_file

    repo = tmp_path / f"models--timm--{MODEL}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in tiny_weights.state.items()}, snapshot / "model.safetensors")
    assert resolve_weights(MODEL, cache_dir=tmp_path) == str(snapshot / "model.safetensors")
    encoder = TimmEncoder(MODEL, cache_dir=tmp_path, **tiny_weights.kwargs)
    assert torch.equal(encoder.model.pos_embed, tiny_weights.state["pos_embed"])


def test_timm_missing_weights_error_says_what_to_do(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        TimmEncoder(DEFAULT_TIMM_MODEL, cache_dir=tmp_path)  # empty cache, no file, no download
    message = str(info.value)
    assert DEFAULT_TIMM_MODEL in message and "weights=" in message and "pixel" in message
    with pytest.raises(MissingWeightsError, match="not found"):
        TimmEncoder(MODEL, weights=tmp_path / "nope.safetensors")
    with pytest.raises(MissingWeightsError):
        build_encoder("timm", cache_dir=tmp_path)  # the default model by name


def test_timm_rejects_bad_options(tiny_weights):
    with pytest.raises(ValueError, match="pool"):
        TimmEncoder(MODEL, weights=tiny_weights.path, pool="max")
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmEncoder("no_such_model_xyz", weights=tiny_weights.path)


def test_build_encoder(tiny_weights, tiny_timm):
    assert isinstance(build_encoder("pixel"), PixelEncoder)
    assert build_encoder("pixel", grid=16).grid == 16
    assert build_encoder(tiny_timm) is tiny_timm
    built = build_encoder(f"timm:{MODEL}", weights=tiny_weights.path, **tiny_weights.kwargs)
    assert isinstance(built, TimmEncoder) and built.name == f"timm:{MODEL}"
    for bad in ("pixels", "clip:foo", 3):
        with pytest.raises(ValueError):
            build_encoder(bad)
    with pytest.raises(ValueError):
        build_encoder(tiny_timm, pool="mean")


def test_encoders_follow_the_device():
    encoder = PixelEncoder().to("cpu")
    assert encoder.device == torch.device("cpu")
    assert encoder.embed([Image.new("RGB", (30, 40), "red")]).device == torch.device("cpu")


def test_a_timm_encoder_holds_bf16_weights_where_it_embeds_in_bf16(tiny_weights, monkeypatch):
    """DINOv2-L in fp32 takes 1.1 GiB of a 16 GB card while autocast computes in bf16 anyway.
    A meta device stands in for the GPU."""
    from vinci.reward import encoders
    from vinci.reward.metric import PatchSimilarity

    monkeypatch.setattr(encoders, "BF16_DEVICES", ("cuda", "meta"))
    metric = PatchSimilarity(TimmEncoder(MODEL, weights=tiny_weights.path, **tiny_weights.kwargs))
    weights = list(metric.encoder.model.parameters())
    assert all(p.dtype == torch.float32 for p in weights)  # on the CPU it computes in fp32
    metric.to("meta")
    assert metric.encoder.device.type == "meta"
    assert all(p.dtype == torch.bfloat16 and p.device.type == "meta" for p in metric.encoder.model.parameters())
    assert metric.encoder._mean.dtype == torch.float32  # the normalisation of the fp32 input
