"""PatchSimilarity: flags, states, per-language counts, argument checks, DDP-style merging."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from vinci.reward.encoders import PixelEncoder
from vinci.reward.metric import PatchSimilarity
from vinci.reward.similarity import visual_reward

from .conftest import BAR_COLOURS, MODEL, bar_chart

OPTIONS = dict(tile_size=224)  # cheaper tiles; the method is the same


def batch():
    """8 rollouts of 2 prompts: renders (None = failed), references, languages."""
    ref_a, ref_b = bar_chart(), bar_chart(size=(900, 300), heights=(0.3, 0.9, 0.6))
    renders = [
        ref_a.copy(), bar_chart(drop=1), None, bar_chart(colours=BAR_COLOURS[::-1]),
        bar_chart(size=(450, 150), heights=(0.3, 0.9, 0.6)), None, ref_b, bar_chart(size=(900, 300)),
    ]
    references = [ref_a] * 4 + [ref_b] * 4
    languages = ["python", "python", "svg", "html", "latex", "tikz", "svg", "python"]
    return renders, references, languages


def test_flags_and_states():
    metric = PatchSimilarity(**OPTIONS)
    assert metric.higher_is_better is True and metric.full_state_update is False
    assert set(metric._defaults) == {"total", "count", "failed"}
    assert all(fx == "sum" for fx in metric._reductions.values()) or all(
        getattr(fx, "__name__", "") == "dim_zero_sum" for fx in metric._reductions.values()
    )
    with_lang = PatchSimilarity(per_language=True, **OPTIONS)
    assert {"language_total", "language_count", "language_failed"} <= set(with_lang._defaults)


def test_compute_is_the_mean_with_failed_renders_as_zero():
    renders, references, languages = batch()
    metric = PatchSimilarity(per_language=True, **OPTIONS)
    metric.update(renders, references, languages)
    scores = visual_reward(renders, references, PixelEncoder(), **OPTIONS)  # [8]
    assert scores[2] == 0 and scores[5] == 0
    assert metric.compute().item() == pytest.approx(scores.mean().item(), abs=1e-6)
    assert metric.count == 8 and metric.failed == 2
    summary = metric.language_summary()
    assert summary["python/count"] == 3 and summary["latex/count"] == 2  # tikz counts as latex
    assert summary["python/score"].item() == pytest.approx(scores[[0, 1, 7]].mean().item(), abs=1e-6)
    assert summary["svg/fail_rate"].item() == pytest.approx(0.5) and summary["latex/fail_rate"].item() == 0.5
    assert "html/score" in summary and summary["html/fail_rate"] == 0


def test_score_returns_per_sample_values_and_encodes_once():
    renders, references, languages = batch()
    metric = PatchSimilarity(**OPTIONS)
    calls = []
    inner = metric.encoder.embed
    metric.encoder.embed = lambda crops: calls.append(len(crops)) or inner(crops)
    scores = metric.score(renders, references)
    assert len(calls) == 1  # one batched pass, nothing re-encoded by update
    assert scores.shape == (8,) and metric.count == 8
    assert metric.compute().item() == pytest.approx(scores.mean().item(), abs=1e-6)


def test_forward_and_reset():
    renders, references, _ = batch()
    metric = PatchSimilarity(**OPTIONS)
    first = metric(renders[:4], references[:4])
    metric(renders[4:], references[4:])
    assert metric.count == 8
    expected = visual_reward(renders[:4], references[:4], "pixel", **OPTIONS).mean()
    assert first.item() == pytest.approx(expected.item(), abs=1e-6)
    metric.reset()
    assert metric.count == 0 and metric.total == 0


def test_bad_arguments_raise():
    for bad in (dict(global_weight=2.0), dict(tile_size=0), dict(max_tiles=0), dict(batch_size=0)):
        with pytest.raises(ValueError):
            PatchSimilarity(**bad)
    for encoder in (3, "dino"):
        with pytest.raises(ValueError):
            PatchSimilarity(encoder)
    renders, references, languages = batch()
    metric = PatchSimilarity(per_language=True, **OPTIONS)
    with pytest.raises(ValueError, match="references"):
        metric.update(renders, references[:3], languages)
    with pytest.raises(ValueError, match="language"):
        metric.update(renders, references)  # per_language needs languages
    with pytest.raises(ValueError, match="languages"):
        metric.update(renders, references, languages[:2])
    with pytest.raises(ValueError, match="unknown language"):
        metric.update(renders, references, ["cobol"] * 8)
    with pytest.raises(ValueError, match="shape"):
        metric.update(renders, references, languages, scores=torch.zeros(3))
    with pytest.raises(ValueError, match="per_language"):
        PatchSimilarity().language_summary()


def test_encoder_by_name_with_options(tiny_weights):
    options = dict(weights=tiny_weights.path, **tiny_weights.kwargs)
    metric = PatchSimilarity(f"timm:{MODEL}", encoder_options=options)
    assert metric.encoder.name == f"timm:{MODEL}" and metric.encoder.input_size == (56, 56)
    assert PatchSimilarity("pixel", encoder_options=dict(grid=8)).encoder.grid == 8
    assert PatchSimilarity("pixel").encoder is not PatchSimilarity("pixel").encoder  # each metric owns its own


def test_encoder_is_not_part_of_the_module(tiny_timm):
    metric = PatchSimilarity(tiny_timm, **OPTIONS)
    assert metric.encoder is tiny_timm
    assert list(metric.parameters()) == [] and not any("model" in k for k in metric.state_dict())
    metric.double()  # a precision cast moves states, never the encoder's dtype
    assert next(tiny_timm.parameters()).dtype == torch.float32
    metric.to("cpu")
    assert tiny_timm.device == torch.device("cpu")


def test_two_halves_merged_equal_the_whole(tiny_timm):
    renders, references, languages = batch()
    whole = PatchSimilarity(tiny_timm, per_language=True, **OPTIONS)
    whole.update(renders, references, languages)
    halves = [PatchSimilarity(tiny_timm, per_language=True, **OPTIONS) for _ in range(2)]
    halves[0].update(renders[:4], references[:4], languages[:4])
    halves[1].update(renders[4:], references[4:], languages[4:])
    summed = {name: getattr(halves[0], name) + getattr(halves[1], name) for name in whole._defaults}
    for name, value in summed.items():
        assert torch.allclose(value.float(), getattr(whole, name).float(), atol=1e-5), name
    merged = copy.deepcopy(halves[0])
    merged.merge_state(halves[1])
    assert merged.compute().item() == pytest.approx(whole.compute().item(), abs=1e-6)
    for key, value in whole.language_summary().items():
        assert merged.language_summary()[key].item() == pytest.approx(value.item(), abs=1e-6), key


def _ddp_worker(rank: int, world: int, store: str, weights: str, kwargs: dict, out: str) -> None:
    from vinci.reward.encoders import TimmEncoder

    torch.set_num_threads(1)  # forked from a process whose OpenMP pool may be live
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        renders, references, languages = batch()
        half = slice(rank * 4, rank * 4 + 4)
        metric = PatchSimilarity(TimmEncoder(MODEL, weights=weights, **kwargs), per_language=True, **OPTIONS)
        metric.update(renders[half], references[half], languages[half])
        result = {"mean": metric.compute(), **metric.language_summary()}
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def test_ddp_run_across_two_processes_equals_one_process(tiny_weights, tiny_timm, tmp_path):
    out = tmp_path / "result.pt"
    args = (2, str(tmp_path / "store"), str(tiny_weights.path), tiny_weights.kwargs, str(out))
    # fork: the children inherit the imports (spawn re-imports torch/timm, ~10 s on a busy 2-core box)
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    synced = torch.load(out)
    renders, references, languages = batch()
    whole = PatchSimilarity(tiny_timm, per_language=True, **OPTIONS)
    whole.update(renders, references, languages)
    assert synced["mean"].item() == pytest.approx(whole.compute().item(), abs=1e-5)
    expected = whole.language_summary()
    assert set(synced) - {"mean"} == set(expected)
    for key, value in expected.items():
        assert synced[key].item() == pytest.approx(value.item(), abs=1e-5), key


def test_images_of_any_mode_are_accepted():
    rgba = bar_chart().convert("RGBA")
    metric = PatchSimilarity(**OPTIONS)
    metric.update([rgba, Image.new("L", (64, 48), 255)], [bar_chart(), bar_chart()])
    assert 0 < metric.compute() < 1
