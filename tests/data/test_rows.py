"""read_rows: every format x schema, every image kind, and the contract of an Example."""

from __future__ import annotations

import base64
import logging

import pytest
from PIL import Image

from tests.data.conftest import (CHART_PROMPT, SVG_PROMPT, png_bytes, rl_row, sft_row, write_disk, write_json,
                                 write_jsonl, write_parquet)
from vinci.data.rows import Example, RowSet, read_rows

WRITERS = {"jsonl": write_jsonl, "json": write_json, "parquet": write_parquet}


def _bytes_ref(color="red", size=(40, 30)):
    return {"bytes": png_bytes(size, color), "path": None}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "disk"])
@pytest.mark.parametrize("schema", ["sft", "rl"])
def test_every_format_and_schema(tmp_path, pngs, fmt, schema):
    make = sft_row if schema == "sft" else rl_row
    if fmt in ("jsonl", "json"):
        images = [pngs["red"], str(tmp_path / pngs["red"])]  # relative and absolute paths
    else:
        images = [_bytes_ref("red"), _bytes_ref("blue", (30, 40))]
    rows = [make(images[0]), make(images[1], prompt=SVG_PROMPT if schema == "rl" else CHART_PROMPT)]
    if fmt == "disk":
        path = write_disk(tmp_path / "data", rows)
    else:
        path = WRITERS[fmt](tmp_path / f"data.{fmt}", rows)

    rowset = read_rows(path, min_pixels=100, max_pixels=100_000)

    assert isinstance(rowset, RowSet) and len(rowset) == 2 and rowset.schema == schema
    assert rowset.skipped == {}
    first, second = rowset[0], rowset[1]
    assert isinstance(first, Example)
    assert first.image.mode == "RGB" and first.image.getpixel((0, 0)) == (255, 0, 0)
    assert first.source == f"{path}:row 0" and second.source == f"{path}:row 1"
    expected = ("svg", "python") if schema == "sft" else ("python", "svg")
    assert (first.language, second.language) == expected
    assert first.prompt.count("<image>") == 1
    if schema == "sft":
        assert first.answer == "```svg\n<svg/>\n```"  # the assistant turn; the system turn is ignored
    else:
        assert first.answer == "```python\nprint(1)\n```"


def test_explicit_schema_and_rl_answer_optional(tmp_path, pngs):
    path = write_jsonl(tmp_path / "rl.jsonl", [rl_row(pngs["red"], answer=None), rl_row(pngs["red"], answer="")])
    rowset = read_rows(path, schema="rl")
    assert [rowset[i].answer for i in range(2)] == [None, None]
    with pytest.raises(ValueError, match="schema"):
        read_rows(path, schema="chat")


def test_image_kinds_in_json(tmp_path, pngs):
    encoded = base64.b64encode(png_bytes((40, 30), "green")).decode()
    rows = [
        rl_row(pngs["red"]),  # relative path
        rl_row({"bytes": encoded, "path": None}),  # base64 bytes dict
        rl_row({"bytes": None, "path": pngs["red"]}),  # path dict
        {**rl_row(None), "images": pngs["red"]},  # a single reference instead of a list
    ]
    rowset = read_rows(write_jsonl(tmp_path / "kinds.jsonl", rows))
    colors = [rowset[i].image.getpixel((0, 0)) for i in range(4)]
    assert colors == [(255, 0, 0), (0, 128, 0), (255, 0, 0), (255, 0, 0)]


def test_image_feature_without_list(tmp_path):
    path = write_disk(tmp_path / "single", [rl_row(_bytes_ref("blue"))], as_list=False)
    assert read_rows(path)[0].image.getpixel((1, 1)) == (0, 0, 255)


def test_parquet_with_image_feature(tmp_path):
    import datasets

    table = datasets.Dataset.from_list([sft_row(_bytes_ref("blue"))])
    table.cast_column("images", datasets.List(datasets.Image())).to_parquet(str(tmp_path / "f.parquet"))
    assert read_rows(tmp_path / "f.parquet")[0].image.getpixel((0, 0)) == (0, 0, 255)


def test_transparency_is_flattened_onto_white(tmp_path, pngs):
    rowset = read_rows(write_jsonl(tmp_path / "a.jsonl", [sft_row(pngs["clear"])]))
    assert rowset[0].image.mode == "RGB" and rowset[0].image.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("size,low,high", [((40, 30), 10_000, 50_000), ((400, 100), 100, 2_000), ((40, 30), 100, 5_000)])
def test_images_are_fitted_into_the_pixel_range(tmp_path, size, low, high):
    path = write_parquet(tmp_path / "p.parquet", [rl_row(_bytes_ref("red", size))])
    rowset = read_rows(path, min_pixels=low, max_pixels=high)
    image = rowset[0].image
    assert low <= image.width * image.height <= high
    assert abs(image.width / image.height - size[0] / size[1]) < 0.1  # aspect ratio kept
    assert rowset.rows[0].image_size == image.size  # known before decoding, for length filters


def test_prompt_without_placeholder_gets_one(tmp_path, pngs):
    path = write_jsonl(tmp_path / "a.jsonl", [rl_row(pngs["red"], prompt="Write html for this page.")])
    example = read_rows(path)[0]
    assert example.prompt == "<image>Write html for this page." and example.language == "html"


def test_language_column_overrides_the_prompt(tmp_path, pngs):
    path = write_jsonl(tmp_path / "a.jsonl", [rl_row(pngs["red"], language="tikz"), rl_row(pngs["red"], language=None)])
    rowset = read_rows(path)
    assert [rowset[0].language, rowset[1].language] == ["latex", "python"]


def test_select_and_languages(tmp_path, pngs):
    rows = [rl_row(pngs["red"]), rl_row(pngs["red"], prompt=SVG_PROMPT), rl_row(pngs["red"])]
    rowset = read_rows(write_jsonl(tmp_path / "a.jsonl", rows))
    assert rowset.languages() == {"python": 2, "svg": 1}
    picked = rowset.select([1])
    assert len(picked) == 1 and picked[0].language == "svg" and picked[0].source.endswith(":row 1")


def test_rowset_works_in_a_dataloader(tmp_path):
    from torch.utils.data import DataLoader

    path = write_disk(tmp_path / "d", [rl_row(_bytes_ref("red")) for _ in range(3)])
    loader = DataLoader(read_rows(path), batch_size=2, collate_fn=list, num_workers=1)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 1] and all(isinstance(e, Example) for b in batches for e in b)


def test_no_log_line_when_nothing_is_skipped(tmp_path, pngs, caplog):
    with caplog.at_level(logging.WARNING, logger="vinci.data.rows"):
        read_rows(write_jsonl(tmp_path / "a.jsonl", [rl_row(pngs["red"])]), on_bad_row="skip")
    assert not caplog.records


def test_image_reference_is_resolved_against_the_data_file(tmp_path, pngs, monkeypatch):
    monkeypatch.chdir(tmp_path / "img")  # a cwd where the relative path would not resolve
    path = write_jsonl(tmp_path / "a.jsonl", [rl_row(pngs["red"])])
    assert read_rows(path, min_pixels=100)[0].image.size == Image.open(tmp_path / pngs["red"]).size


def test_dataset_dict_folder_splits(tmp_path):
    import datasets

    table = datasets.Dataset.from_list([rl_row(_bytes_ref("red"))])
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "one"))
    assert len(read_rows(tmp_path / "one")) == 1
    two = datasets.Dataset.from_list([rl_row(_bytes_ref("red")), rl_row(_bytes_ref("blue"))])
    datasets.DatasetDict({"train": table, "test": two}).save_to_disk(str(tmp_path / "two"))
    assert len(read_rows(tmp_path / "two")) == 1  # the role's split: train
    assert len(read_rows(tmp_path / "two", role="test")) == 2
    assert len(read_rows(f"{tmp_path / 'two'}@test")) == 2  # a split named after the folder
    datasets.DatasetDict({"a": table, "b": table}).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(ValueError, match=r"splits \['a', 'b'\]; name one: .*odd@a"):
        read_rows(tmp_path / "odd")
