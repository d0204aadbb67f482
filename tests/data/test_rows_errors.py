"""read_rows on bad input: each error names file, row and field; skip mode counts and logs once."""

from __future__ import annotations

import logging

import pytest

from tests.data.conftest import png_bytes, rl_row, sft_row, write_disk, write_json, write_jsonl, write_parquet
from vinci.data.rows import BadRowError, read_rows


def _error(path, **kwargs) -> BadRowError:
    with pytest.raises(BadRowError) as info:
        read_rows(path, **kwargs)
    return info.value


def _assert_names(err: BadRowError, path, row, field, reason):
    message = str(err)
    assert str(path) in message
    assert (err.row, err.field, err.reason) == (row, field, reason)
    if row is not None:
        assert f"row {row}" in message
    if field is not None:
        assert f"'{field}'" in message
    assert isinstance(err, ValueError)


BAD_ROWS = {
    # name: (row builder, field, reason)
    "missing image file": (lambda p: rl_row("img/nowhere.png"), "images", "missing image"),
    "corrupt image file": (lambda p: rl_row(p["broken"]), "images", "corrupt image"),
    "corrupt image bytes": (lambda p: rl_row({"bytes": "bm90IGFuIGltYWdl", "path": None}), "images", "corrupt image"),
    "no image listed": (lambda p: rl_row(None), "images", "missing image"),
    "missing problem": (lambda p: {"images": [p["red"]], "answer": "x"}, "problem", "missing field"),
    "missing images": (lambda p: {"problem": "<image>svg", "answer": "x", "images": None}, "images", "missing field"),
    "unknown language": (lambda p: rl_row(p["red"], language="cobol"), "language", "unknown language"),
    "two images": (lambda p: {**rl_row(p["red"]), "images": [p["red"], p["red"]]}, "images", "multiple images"),
    "two placeholders": (lambda p: rl_row(p["red"], prompt="<image><image>svg"), "problem", "multiple images"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rl_row_names_file_row_and_field(tmp_path, pngs, case):
    build, field, reason = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "rows.jsonl", [rl_row(pngs["red"]), build(pngs)])
    _assert_names(_error(path), path, 1, field, reason)


SFT_BAD = {
    "empty answer": (lambda p: sft_row(p["red"], answer="  \n"), "messages[2].content", "empty answer"),
    "no assistant turn": (lambda p: sft_row(p["red"], answer=None), "messages", "missing field"),
    "null answer": (lambda p: {**sft_row(p["red"]), "messages": [{"role": "user", "content": "<image>"},
                                                                  {"role": "assistant", "content": None}]},
                    "messages[1].content", "missing field"),
    "no user turn": (lambda p: {**sft_row(p["red"]), "messages": [{"role": "assistant", "content": "x"}]},
                     "messages", "missing field"),
}


@pytest.mark.parametrize("case", sorted(SFT_BAD))
def test_bad_sft_row_names_file_row_and_field(tmp_path, pngs, case):
    build, field, reason = SFT_BAD[case]
    path = write_json(tmp_path / "rows.json", [sft_row(pngs["red"]), sft_row(pngs["red"]), build(pngs)])
    _assert_names(_error(path), path, 2, field, reason)


def test_corrupt_image_inside_a_datasets_image_feature(tmp_path):
    rows = [sft_row({"bytes": png_bytes(), "path": None}), sft_row({"bytes": b"garbage", "path": None})]
    path = write_disk(tmp_path / "disk", rows)
    _assert_names(_error(path), path, 1, "images", "corrupt image")


def test_corrupt_bytes_in_parquet(tmp_path):
    rows = [rl_row({"bytes": png_bytes(), "path": None}), rl_row({"bytes": png_bytes()[:60], "path": None})]
    path = write_parquet(tmp_path / "p.parquet", rows)
    _assert_names(_error(path), path, 1, "images", "corrupt image")


def test_unreadable_files(tmp_path):
    missing = tmp_path / "absent.jsonl"
    _assert_names(_error(missing), missing, None, None, "unreadable file")

    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text('{"problem": "<image>", "images": ["a.png"]}\n{"problem": "<image>", "images": [\n')
    err = _error(garbled)  # one bad line is a bad row, not an unreadable file
    _assert_names(err, garbled, 1, None, "invalid JSON")
    assert len(read_rows(garbled, on_bad_row="skip", validate="lazy")) == 1

    for name, content in [("bad.parquet", b"PAR1 not really parquet"), ("empty.jsonl", b""),
                          ("broken.json", b'[{"problem": 1},'), ("data.csv", b"a,b\n1,2\n")]:
        path = tmp_path / name
        path.write_bytes(content)
        _assert_names(_error(path), path, None, None, "unreadable file")

    not_a_dataset = tmp_path / "folder"
    not_a_dataset.mkdir()
    _assert_names(_error(not_a_dataset), not_a_dataset, None, None, "unreadable file")


def test_no_known_schema_columns(tmp_path, pngs):
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "<image>", "images": [pngs["red"]]}])
    err = _error(path, on_bad_row="skip")  # a file-level problem: skipping cannot help
    assert "'messages|conversations|problem'" in str(err) and str(path) in str(err)


def test_skip_mode_counts_by_reason_and_logs_one_line(tmp_path, pngs, caplog):
    rows = [
        rl_row(pngs["red"]),
        rl_row(pngs["broken"]),
        rl_row("img/nowhere.png"),
        rl_row(pngs["red"], language="cobol"),
        {"images": [pngs["red"]]},
        rl_row(pngs["clear"]),
        rl_row(pngs["broken"]),
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="vinci.data.rows"):
        rowset = read_rows(path, on_bad_row="skip")
    assert len(rowset) == 2
    assert [rowset[i].source for i in range(2)] == [f"{path}:row 0", f"{path}:row 5"]
    assert rowset.skipped == {"corrupt image": 2, "missing image": 1, "unknown language": 1, "missing field": 1}
    lines = [r.getMessage() for r in caplog.records if r.name == "vinci.data.rows"]
    assert len(lines) == 1
    assert str(path) in lines[0] and "5 of 7" in lines[0] and "corrupt image=2" in lines[0]


def test_bad_arguments(tmp_path, pngs):
    path = write_jsonl(tmp_path / "a.jsonl", [rl_row(pngs["red"])])
    with pytest.raises(ValueError, match="on_bad_row"):
        read_rows(path, on_bad_row="ignore")
    with pytest.raises(ValueError, match="min_pixels"):
        read_rows(path, min_pixels=100, max_pixels=10)
