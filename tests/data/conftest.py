"""Builders for small data files in every format the reader accepts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

SVG_PROMPT = "<image>Write the svg code that draws this image."
CHART_PROMPT = "<image>Write the matplotlib python code that draws this chart."


def b64_png(size=(40, 30), color="red") -> dict:
    """An image reference that fits in JSON: base64 bytes, as `datasets` writes them."""
    import base64

    return {"bytes": base64.b64encode(png_bytes(size, color)).decode(), "path": None}


def png_bytes(size=(40, 30), color="red", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def sft_row(image, prompt=SVG_PROMPT, answer="```svg\n<svg/>\n```", **extra) -> dict:
    turns = [{"role": "system", "content": "You write code."}, {"role": "user", "content": prompt}]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return {"messages": turns, "images": [image], **extra}


def rl_row(image, prompt=CHART_PROMPT, answer="```python\nprint(1)\n```", **extra) -> dict:
    row = {"problem": prompt, "images": [image], **extra}
    if answer is not None:
        row["answer"] = answer
    return row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def write_disk(path: Path, rows: list[dict], image_feature: bool = True, as_list: bool = True) -> Path:
    """save_to_disk folder; with image_feature the images column is a datasets Image feature."""
    table = datasets.Dataset.from_list(rows)
    if image_feature:
        feature = datasets.Image()
        if as_list:
            table = table.cast_column("images", datasets.List(feature))
        else:
            table = table.map(lambda r: {"images": r["images"][0]}).cast_column("images", feature)
    table.save_to_disk(str(path))
    return path


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test's `datasets` cache (and cleaned JSON-lines copies) in its own temp folder."""
    cache = tmp_path_factory.mktemp("hf-datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


@pytest.fixture
def pngs(tmp_path: Path) -> dict:
    """Image files beside the data files: a good one, an RGBA one, a corrupt one."""
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "red.png").write_bytes(png_bytes((40, 30), "red"))
    (folder / "clear.png").write_bytes(png_bytes((20, 20), (0, 0, 255, 0), mode="RGBA"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return {"red": "img/red.png", "clear": "img/clear.png", "broken": "img/broken.png"}
