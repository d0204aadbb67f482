"""Hostile rows that used to pass validation or crash the reader: each is a BadRowError naming
file, row and field, and skip mode drops and counts it (issue 18, item 3)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.data.conftest import b64_png, png_bytes, rl_row, write_jsonl, write_parquet
from vinci.data.rows import BadRowError, read_rows

ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG with every CRC valid: an 8-bit RGB header of the given size and the given IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _jpeg_truncated() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


BAD_IMAGES = {
    # name: (image bytes, reason)
    "decompression bomb": (_png(20000, 20000, zlib.compress(b"\x00" * 1000)), "image too large"),
    "broken zlib stream": (_png(40, 30, b"\x78\x9c" + b"\x13\x37" * 50), "corrupt image"),
    "truncated jpeg": (_jpeg_truncated(), "corrupt image"),
    "1x3000 strip": (png_bytes((1, 3000)), "bad aspect ratio"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_a_bad_row_and_skip_counts_it(tmp_path, case):
    data, reason = BAD_IMAGES[case]
    good = {"bytes": png_bytes(), "path": None}
    path = write_parquet(tmp_path / "rows.parquet", [rl_row(good), rl_row({"bytes": data, "path": None}), rl_row(good)])
    with pytest.raises(BadRowError) as info:
        read_rows(path)
    assert (info.value.file, info.value.row, info.value.field, info.value.reason) == (str(path), 1, "images", reason)
    skipped = read_rows(path, on_bad_row="skip")
    assert len(skipped) == 2 and skipped.skipped == {reason: 1}
    assert [skipped[i].source for i in range(2)] == [f"{path}:row 0", f"{path}:row 2"]
    lazy = read_rows(path, on_bad_row="skip", validate="lazy")  # found on use: skipped, never a crash
    assert {lazy[i].source for i in range(3)} == {f"{path}:row 0", f"{path}:row 2"} and lazy.skipped == {reason: 1}


def test_non_utf8_line_is_a_bad_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [rl_row(b64_png()), rl_row(b64_png())])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1].replace(b"matplotlib", b"matpl\xffotlib") + lines[0])
    with pytest.raises(BadRowError) as info:
        read_rows(path)
    assert (info.value.row, info.value.reason) == (1, "bad encoding") and str(path) in str(info.value)
    rows = read_rows(path, on_bad_row="skip")
    assert len(rows) == 2 and rows.skipped == {"bad encoding": 1}
    assert [rows[i].source for i in range(2)] == [f"{path}:row 0", f"{path}:row 2"]  # original row numbers


def test_one_non_object_line_does_not_sink_the_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [rl_row(b64_png())])
    path.write_text(path.read_text() + '["not", "an", "object"]\n\n' + path.read_text() + "42\n")
    with pytest.raises(BadRowError) as info:
        read_rows(path)
    assert (info.value.row, info.value.reason) == (1, "not an object")
    rows = read_rows(path, on_bad_row="skip", validate="lazy")
    assert len(rows) == 2 and rows.skipped == {"not an object": 2} and rows[1].source == f"{path}:row 2"


def test_a_file_of_only_null_is_an_error_not_a_segfault(tmp_path):
    """pyarrow crashes the process on this file; run in a child so a regression cannot kill the suite."""
    path = tmp_path / "null.jsonl"
    path.write_text("null\n")
    code = ("import sys\nfrom vinci.data.rows import read_rows, BadRowError\n"
            f"try:\n    read_rows({str(path)!r})\nexcept BadRowError as err:\n    print('ERR', err.row, err.reason)\n"
            f"try:\n    read_rows({str(path)!r}, on_bad_row='skip')\nexcept BadRowError as err:\n    print('ERR', err.reason)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"HF_DATASETS_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["ERR 0 not an object", "ERR unreadable file"]


def test_image_that_breaks_after_validation_is_skipped_mid_epoch(tmp_path, pngs):
    path = write_jsonl(tmp_path / "rows.jsonl", [rl_row(pngs["red"]), rl_row("img/late.png"), rl_row(pngs["red"])])
    (tmp_path / "img" / "late.png").write_bytes(png_bytes())
    strict, lenient = read_rows(path), read_rows(path, on_bad_row="skip")
    assert len(strict) == len(lenient) == 3
    (tmp_path / "img" / "late.png").write_bytes(png_bytes()[:70])  # truncated after the check
    with pytest.raises(BadRowError, match=r"row 1: field 'images': corrupt image"):
        strict[1]
    assert lenient[1].source == f"{path}:row 2" and lenient.skipped == {"corrupt image": 1}
    from torch.utils.data import DataLoader

    batches = list(DataLoader(lenient, batch_size=3, collate_fn=list))
    assert [len(b) for b in batches] == [3]  # the epoch completes with full batches
