"""Line-level checks of a JSON-lines file, before pyarrow sees it.

pyarrow's JSON reader fails a whole file for one bad line, raises a bare `UnicodeDecodeError`
for one non-UTF-8 byte, and crashes the process (a segfault) on a file whose only line is
``null``. So every non-empty line is checked first, in bytes: it must decode as UTF-8 and start
with ``{`` (an object). The check costs one pass over the file's bytes, with no JSON parsing;
lines that pass it but are not valid JSON are found with the json module only when pyarrow
fails (`syntax_errors`).

Bad lines are `BadRowError`s naming file and row (0-based, counting non-empty lines, as
`datasets` does). With skip, `clean_copy` writes the good lines to a file in the `datasets`
cache and returns the row number of each kept line, so errors and ids still name the
original row.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from vinci.data.errors import BadRowError


def is_json_lines(path: Path) -> bool:
    """A .jsonl file, or a .json file that is not one JSON array."""
    if path.suffix.lower() == ".jsonl":
        return True
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    return path.suffix.lower() == ".json" and not head.startswith(b"[")


def line_errors(path: Path) -> list[BadRowError]:
    """Non-empty lines that are not UTF-8 or do not start an object, in file order."""
    file, errors, row = str(path), [], 0
    with open(path, "rb") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                errors.append(BadRowError(file, row, None, "bad encoding", f"not UTF-8 at byte {err.start} of the line"))
            else:
                if not line.startswith(b"{"):
                    errors.append(BadRowError(file, row, None, "not an object",
                                              f"each line must be a JSON object, got {line[:40].decode()!r}"))
            row += 1
    return errors


def syntax_errors(path: Path) -> list[BadRowError]:
    """Non-empty lines the json module cannot parse (only run after pyarrow failed)."""
    file, errors, row = str(path), [], 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8", errors="replace"))
            except json.JSONDecodeError as err:
                errors.append(BadRowError(file, row, None, "invalid JSON", f"{err.msg} at character {err.pos} of the line"))
            else:
                if not isinstance(value, dict):
                    errors.append(BadRowError(file, row, None, "not an object", f"got {type(value).__name__}"))
            row += 1
    return errors


def clean_copy(path: Path, bad_rows: set[int], cache_dir: Path) -> tuple[Path, np.ndarray]:
    """The file without the bad rows, in cache_dir; and each kept line's original row number."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(bad_rows)}".encode()).hexdigest()[:16]
    target = cache_dir / f"{path.stem}-{key}.jsonl"
    rows, row = [], 0
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.stem}-", suffix=".jsonl")
    try:
        with os.fdopen(handle, "wb") as out, open(path, "rb") as source:
            for line in source:
                if not line.strip():
                    continue
                if row not in bad_rows:
                    out.write(line.rstrip(b"\r\n") + b"\n")
                    rows.append(row)
                row += 1
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target, np.asarray(rows, dtype=np.int64)
