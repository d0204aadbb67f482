"""What benchmarks.gpu_check runs on: rows with a full-size chart, and DINOv2-L in a local cache.

- `write_rows`: one chart image (40 x 25 image tokens, as benchmarks.memory measures) and
  SFT rows whose answers are grown to fill the recipe's max_length (the worst case the recipe
  admits), and RL rows with a reference program (which `PlantAnswers` renders).
- `fill_hub_cache`: a timm model with random weights saved where vinci's TimmEncoder looks
  for it (the Hugging Face cache layout), so the recipes' `encoder: timm:...` loads through
  its own path with nothing downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

PROMPT = "<image>Write the matplotlib python code that draws this chart."
CHART = """import matplotlib.pyplot as plt

values = [3, 7, 4, 9, 6, 8, 2, 5, 7, 4, 6, 3]
fig, ax = plt.subplots(figsize=(11.2, 7.0), dpi=100)
ax.bar(range(len(values)), values, color="#3a6fb0")
ax.set_title("Monthly totals")
ax.set_xlabel("month")
ax.set_ylabel("total")"""
REVISION = "0" * 40  # the snapshot folder name in the cache; any commit-like string


def answer(lines: int) -> str:
    """The chart program with `lines` extra annotation lines: a longer answer, the same chart."""
    from vinci.tasks import fence

    extra = [f'ax.annotate("point {i}", xy=({i % 12}, {(i * 7) % 10}), fontsize=6, alpha=0.0)' for i in range(lines)]
    return fence("\n".join([CHART, *extra, 'plt.savefig("out.png")']), "python")


def sft_length(processor, check, image_size: tuple[int, int], lines: int) -> int:
    """Tokens of an SFT row with this answer, counted as the data module counts them."""
    from vinci.data.collate import full_text

    text = full_text(processor, PROMPT, answer(lines))
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + check.image_tokens(image_size)


def longest_answer(model_dir: Path, image_size: tuple[int, int], max_length: int) -> int:
    """The most annotation lines whose SFT row still fits max_length tokens (bisection)."""
    from transformers import AutoProcessor

    from vinci.data.lengths import LengthCheck

    processor = AutoProcessor.from_pretrained(model_dir)
    check = LengthCheck(processor, "sft", max_length)
    lo, hi = 0, 1
    while sft_length(processor, check, image_size, hi) <= max_length:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sft_length(processor, check, image_size, mid) <= max_length else (lo, mid)
    return lo


def write_rows(out: Path, model_dir: Path, token_px: int, grid: tuple[int, int], sft_rows: int, rl_rows: int,
               max_length: int) -> dict[str, Path]:
    """sft.jsonl (answers grown to max_length tokens) and rl.jsonl (with the program as answer)
    beside images/chart.png; returns their paths."""
    from benchmarks.memory_models import chart_image

    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    image = chart_image(token_px, *grid)
    image.save(out / "images" / "chart.png")
    lines = longest_answer(model_dir, image.size, max_length)
    sft = [{"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": answer(lines)}],
            "images": ["images/chart.png"]} for _ in range(sft_rows)]
    rl = [{"problem": PROMPT, "images": ["images/chart.png"], "answer": answer(0)} for _ in range(rl_rows)]
    paths = {"sft": out / "sft.jsonl", "rl": out / "rl.jsonl"}
    for key, rows in (("sft", sft), ("rl", rl)):
        paths[key].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def fill_hub_cache(cache: Path, model_name: str) -> Path:
    """Save `model_name` (a timm model, random weights, no classifier) as its hub repository's
    model.safetensors in a Hugging Face cache at `cache`; returns the file."""
    import timm
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg(model_name).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    weights = folder / "snapshots" / REVISION / "model.safetensors"
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        net = timm.create_model(model_name, pretrained=False, num_classes=0)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(REVISION)
    return weights
