"""The embedded model: built offline, deterministic, an ordinary model directory."""

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vinci.tiny import TinySpec, build_tiny_vlm


def test_tiny_model_is_a_plain_model_directory(tiny_model):
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model))
    processor = AutoProcessor.from_pretrained(str(tiny_model))
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 2e7, n  # "a few million parameters"
    assert model.config.model_type == "qwen2_vl"
    ids = processor.tokenizer("plt.bar([1, 2], [3, 4])")["input_ids"]
    assert processor.tokenizer.decode(ids) == "plt.bar([1, 2], [3, 4])"


def test_same_seed_same_model(tmp_path):
    spec = TinySpec(texts_per_language=20)
    a = build_tiny_vlm(tmp_path / "a", spec)
    b = build_tiny_vlm(tmp_path / "b", spec)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa = AutoModelForImageTextToText.from_pretrained(str(a)).state_dict()
    wb = AutoModelForImageTextToText.from_pretrained(str(b)).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = build_tiny_vlm(tmp_path / "c", TinySpec(texts_per_language=20, seed=1))
    wc = AutoModelForImageTextToText.from_pretrained(str(other)).state_dict()
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_existing_build_is_reused(tmp_path):
    spec = TinySpec(texts_per_language=20)
    path = build_tiny_vlm(tmp_path / "m", spec)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    build_tiny_vlm(tmp_path / "m", spec)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
