"""Every chat schema vinci reads, detected or named, plus languages it cannot render."""

from __future__ import annotations

from functools import partial

import datasets
import pytest

from tests.data.conftest import b64_png, png_bytes, write_jsonl, write_parquet
from vinci.data.rows import BadRowError
from vinci.data.rows import read_rows as _read_rows

read_rows = partial(_read_rows, min_pixels=100)
ANSWER = "```svg\n<svg/>\n```"


def _parts_row(image=None, inline=None):
    """HF/TRL conversational: list-of-parts content; the image in a column or inline."""
    image_part = {"type": "image"} if inline is None else {"type": "image", "image": inline}
    user = [{"type": "text", "text": "Write the svg code for "}, image_part, {"type": "text", "text": " please."}]
    row = {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}]}
    if image is not None:
        row["images"] = [image]
    return row


def test_list_of_parts_with_an_images_column(tmp_path):
    rows = read_rows(write_parquet(tmp_path / "trl.parquet", [_parts_row({"bytes": png_bytes(), "path": None})]))
    example = rows[0]
    assert rows.schema == "sft" and example.prompt == "Write the svg code for <image> please."
    assert example.answer == ANSWER and example.language == "svg" and example.image.size == (40, 30)


def test_list_of_parts_with_the_image_inline(tmp_path):
    table = datasets.Dataset.from_list([_parts_row(inline={"bytes": png_bytes((20, 10), "blue"), "path": None})])
    path = tmp_path / "inline.parquet"
    table.to_parquet(str(path))
    example = read_rows(path)[0]
    assert example.image.getpixel((0, 0)) == (0, 0, 255) and example.prompt.count("<image>") == 1
    two = _parts_row(inline=b64_png())
    two["messages"][1]["content"].append({"type": "image", "image": b64_png()})
    with pytest.raises(BadRowError, match=r"row 0: field 'messages\[1\].content': multiple images"):
        read_rows(write_jsonl(tmp_path / "two.jsonl", [two]))


def test_list_of_parts_in_a_datasets_image_column(tmp_path):
    table = datasets.Dataset.from_list([_parts_row({"bytes": png_bytes(), "path": None})])
    table = table.cast_column("images", datasets.List(datasets.Image()))
    table.save_to_disk(str(tmp_path / "d"))
    assert read_rows(tmp_path / "d")[0].image.size == (40, 30)


def test_sharegpt_conversations(tmp_path, pngs):
    row = {"conversations": [{"from": "system", "value": "x"}, {"from": "human", "value": "<image>Write html for it."},
                             {"from": "gpt", "value": "```html\n<p/>\n```"}], "image": pngs["red"]}
    rows = read_rows(write_jsonl(tmp_path / "sharegpt.jsonl", [row, {**row, "conversations": row["conversations"][:2]}]),
                     on_bad_row="skip")
    assert rows.schema == "sharegpt" and len(rows) == 1 and rows.skipped == {"missing field": 1}
    assert (rows[0].prompt, rows[0].answer, rows[0].language) == ("<image>Write html for it.", "```html\n<p/>\n```", "html")


def test_columns_mapping(tmp_path):
    rows = [{"question": "Draw this as tikz.", "code": "\\draw (0,0);", "png": b64_png(), "lang": None}]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    mapped = read_rows(path, columns={"prompt": "question", "answer": "code", "image": "png", "language": "lang"})
    assert mapped.schema == "columns" and mapped[0].prompt == "<image>Draw this as tikz."
    assert (mapped[0].answer, mapped[0].language) == ("\\draw (0,0);", "latex")
    with pytest.raises(BadRowError, match="missing field.*'question', 'code', 'png'"):
        read_rows(path)  # no schema column and no mapping
    with pytest.raises(BadRowError, match="field 'pixels'.*not in"):
        read_rows(path, columns={"prompt": "question", "image": "pixels"})
    with pytest.raises(ValueError, match="unknown keys"):
        read_rows(path, columns={"prompt": "question", "image": "png", "picture": "png"})


def test_named_schema_wins_over_detection(tmp_path, pngs):
    row = {"problem": "<image>svg please", "images": [pngs["red"]], "messages": "not turns"}
    path = write_jsonl(tmp_path / "both.jsonl", [row])
    assert read_rows(path, schema="rl")[0].prompt == "<image>svg please"
    with pytest.raises(BadRowError, match="field 'messages': bad field"):
        read_rows(path)  # auto picks sft first


def test_image_urls_are_refused(tmp_path):
    rows = [{"problem": "<image>svg", "images": ["https://example.com/a.png"]},
            {"problem": "<image>svg", "images": [{"bytes": None, "path": "http://x/y.png"}]}]
    path = write_jsonl(tmp_path / "urls.jsonl", rows)
    with pytest.raises(BadRowError, match=r"row 0: field 'images': image url: .*vinci reads no network"):
        read_rows(path)
    assert read_rows(path, on_bad_row="skip", validate="full").skipped == {"image url": 2}


LANGUAGE_CASES = {
    # prompt, answer -> reason, field
    "mermaid": ("<image>Write the mermaid code for this diagram.", "```mermaid\ngraph TD; A-->B\n```",
                "unrenderable language", "problem"),
    "plotly": ("<image>Write python code for this chart.", "```python\nimport plotly.express as px\n```",
               "unsupported library", "answer"),
    "rdkit": ("<image>Write python code that draws this molecule.", "```python\nfrom rdkit import Chem\n```",
              "library not installed", "answer"),
}


@pytest.mark.parametrize("case", sorted(LANGUAGE_CASES))
def test_rows_vinci_cannot_render_are_named_and_counted(tmp_path, case):
    prompt, answer, reason, field = LANGUAGE_CASES[case]
    from vinci.data.language import installed

    if case == "rdkit" and installed("rdkit"):
        pytest.skip("rdkit is installed here, so its rows are kept")
    good = {"problem": "<image>Write svg.", "images": [b64_png()], "answer": ANSWER}
    path = write_jsonl(tmp_path / "rows.jsonl", [good, {**good, "problem": prompt, "answer": answer}, good])
    with pytest.raises(BadRowError) as info:
        read_rows(path)
    assert (info.value.row, info.value.field, info.value.reason) == (1, field, reason)
    assert case in str(info.value)
    for validate in ("full", "lazy"):
        rows = read_rows(path, on_bad_row="skip", validate=validate)
        served = {rows[i].source for i in range(len(rows))}
        assert served == {f"{path}:row 0", f"{path}:row 2"} and rows.skipped == {reason: 1}


def test_language_column_naming_mermaid_is_unrenderable(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "<image>draw", "images": [b64_png()], "language": "mermaid"}])
    with pytest.raises(BadRowError, match="field 'language': unrenderable language"):
        read_rows(path)
