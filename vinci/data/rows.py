"""Read image-to-code rows from any source into `Example`s, checked up front or as they are used.

Sources are `vinci.data.sources` (file, shard folder, glob, save_to_disk folder, hub id),
schemas `vinci.data.schemas` (sft, sharegpt, rl, columns; ``auto`` picks), images
`vinci.data.images`, languages `vinci.data.language`. The table stays memory-mapped: a
`RowSet` holds only the table, an index array of usable rows and (after a full check) their
fitted image sizes, so memory does not grow with the number of rows.

Two ways to check rows (``validate``):

- ``full``: every row is checked before the RowSet is returned, its image decoded to the last
  pixel, in a `datasets.map` pass (``num_proc`` processes, a progress bar, and a cache: a
  second read of the same table with the same settings checks nothing). Bad rows raise, or are
  dropped and counted, before training starts, and ``len`` is exact.
- ``lazy``: only the file-level structure (the schema's columns) is checked up front; a row is
  checked when ``rowset[i]`` reads it. The first batch comes in constant time whatever the size.

Either way, ``rowset[i]`` that meets a bad row (a lazy check, or an image that broke after a
full one) raises `BadRowError` under ``on_bad_row="raise"``, and under ``"skip"`` counts it in
``skipped`` and serves the next usable row instead (i+1, i+2, ... wrapping), so an epoch never
dies on one bad image and batches keep their size. A ``check`` hook (the data module's
length and processor check) runs on each Example; its "too long" rows are always skipped.
Counts made inside DataLoader worker processes stay in those processes (each logs its own).

The target language is read off the prompt (`vinci.data.language.prompt_language`); a
``language`` column, when present and not null, overrides it. A prompt without ``<image>``
gets it prepended (as ms-swift does). Row indices are 0-based rows of the source; each
Example's ``id`` is ``<source stem>-row<index>``, stable across reads and usable as a file name.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vinci.data.errors import BadRowError
from vinci.data.images import DECODE_MAX_PIXELS, ImageError, fit_pixels, fitted_size, load_image
from vinci.data.language import LanguageError, check_library, explicit_language, prompt_language
from vinci.data.schemas import IMAGE, Parsed, Plan, parse, resolve
from vinci.data.sources import BUILDERS, Source, load_source

log = logging.getLogger(__name__)

__all__ = ["BUILDERS", "IMAGE", "BadRowError", "Example", "Row", "RowSet", "read_rows"]

DEFAULT_MIN_PIXELS = 4 * 28 * 28  # Qwen2-VL's processor default
DEFAULT_MAX_PIXELS = 1280 * 28 * 28  # Qwen2-VL's processor default
SKIP_ALWAYS = ("too long",)  # reasons that drop a row even under on_bad_row="raise"
MAX_CONSECUTIVE_SKIPS = 1000  # rowset[i] gives up after this many bad rows in a row
Validate = Literal["full", "lazy"]


@dataclass
class Example:
    image: Image.Image  # RGB, already resized into [min_pixels, max_pixels]
    prompt: str  # user text with exactly one "<image>" placeholder
    language: str  # canonical: python | svg | html | latex
    answer: Optional[str]  # fenced code for SFT rows; reference answer for RL rows (may be None)
    source: str  # "path/to/file.jsonl:row 12"
    id: Optional[str] = None  # stable and usable as a file name: "<file stem>-row12", a benchmark's NAME


@dataclass(frozen=True)
class Row:
    """Everything about a row except the decoded image (built on demand, never kept for all rows)."""

    index: int  # 0-based row index in the source
    prompt: str
    language: str
    answer: Optional[str]
    image_size: tuple[int, int]  # (width, height) after fitting into the pixel range
    source: str


@dataclass(frozen=True)
class Checker:
    """Checks one record: fields, language, library, and (with decode) the image to the last pixel."""

    file: str
    plan: Plan
    base_dir: Path
    min_pixels: int
    max_pixels: int
    require_answer: bool
    max_decode_pixels: int = DECODE_MAX_PIXELS

    def text(self, record: dict, row: int) -> tuple[Parsed, str]:
        parsed = parse(record, self.plan, self.file, row)
        explicit = parsed.language is not None
        try:
            language = explicit_language(parsed.language) if explicit else prompt_language(parsed.prompt)
        except LanguageError as err:
            field = self.plan.language if explicit else parsed.prompt_field
            raise BadRowError(self.file, row, field, err.reason, err.detail) from None
        if language == "python":
            try:
                check_library(parsed.prompt, parsed.answer)
            except LanguageError as err:
                field = parsed.answer_field if parsed.answer is not None else parsed.prompt_field
                raise BadRowError(self.file, row, field, err.reason, err.detail) from None
        if self.require_answer and parsed.answer is None:
            raise BadRowError(self.file, row, parsed.answer_field, "missing answer", "an SFT row needs an answer")
        return parsed, language

    def image(self, parsed: Parsed, row: int) -> Image.Image:
        try:
            image = load_image(parsed.image, self.base_dir, self.max_decode_pixels)
        except ImageError as err:
            raise BadRowError(self.file, row, parsed.image_field, err.reason, err.detail) from None
        return fit_pixels(image, self.min_pixels, self.max_pixels)

    def __call__(self, batch: dict, positions: list[int], numbers: Optional[np.ndarray]) -> dict:
        """`datasets.map` body: one reason/field/detail/width/height per row (reason None: good)."""
        out = {k: [] for k in ("reason", "field", "detail", "width", "height")}
        names = list(batch)
        for k, position in enumerate(positions):
            record = {name: batch[name][k] for name in names}
            row = int(numbers[position]) if numbers is not None else position
            try:
                parsed, _ = self.text(record, row)
                size = self.image(parsed, row).size
                values = (None, None, None, *size)
            except BadRowError as err:
                values = (err.reason, err.field, err.detail, 0, 0)
            for key, value in zip(out, values):
                out[key].append(value)
        return out


class RowSet(Dataset):
    """Rows of one source; ``rowset[i]`` checks row i, decodes and fits its image.

    ``skipped`` counts dropped rows by reason; ``rows`` gives per-row `Row` metadata on demand
    (no image decoded when sizes are known from a full check); ``select(indices)`` returns a
    RowSet with those positions only; ``check`` is an optional hook run on each Example that
    returns None, or (reason, detail) to drop it.
    """

    def __init__(self, source: Source, checker: Checker, positions: np.ndarray, sizes: Optional[np.ndarray],
                 on_bad_row: str, validated: bool, skipped: Optional[Counter] = None,
                 check: Optional[Callable[[Example], Optional[tuple[str, str]]]] = None):
        self.source, self.checker = source, checker
        self.positions = positions  # [N] int64 table positions of the rows served
        self.sizes = sizes  # [N, 2] fitted (width, height) when validated, else None
        self.on_bad_row, self.validated = on_bad_row, validated
        self.skipped: Counter = Counter(skipped or {})
        self.first: dict[str, str] = {}  # reason -> the first such error's message, for the give-up error
        self.bad: set[int] = set()  # positions found bad by rowset[i]: counted once, then passed over
        self.check = check

    file = property(lambda self: self.source.label)
    schema = property(lambda self: self.checker.plan.schema)
    base_dir = property(lambda self: self.source.base_dir)
    min_pixels = property(lambda self: self.checker.min_pixels)
    max_pixels = property(lambda self: self.checker.max_pixels)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Example:
        n = len(self.positions)
        if n == 0:
            raise IndexError(f"{self.file}: no rows")
        for step in range(min(n, MAX_CONSECUTIVE_SKIPS)):
            j = (i + step) % n
            if j in self.bad:
                continue
            try:
                return self.example(j)
            except BadRowError as err:
                if self.on_bad_row == "raise" and err.reason not in SKIP_ALWAYS:
                    raise
                self.bad.add(j)
                self._count(err)
        counts = ", ".join(f"{r}={c}" for r, c in sorted(self.skipped.items()))
        what = "every row" if n <= MAX_CONSECUTIVE_SKIPS else f"{MAX_CONSECUTIVE_SKIPS} rows in a row from position {i}"
        firsts = "; ".join(self.first.values())
        raise ValueError(f"{self.file}: {what} was skipped ({counts}); first of each: {firsts}")

    def example(self, i: int) -> Example:
        """Row at position i, checked; BadRowError when it is bad (never skips)."""
        row = self.source.row_number(int(self.positions[i]))
        parsed, language = self.checker.text(self._record(i), row)
        image = self.checker.image(parsed, row)
        example = Example(image, parsed.prompt, language, parsed.answer, f"{self.file}:row {row}", self._id(row))
        problem = self.check(example) if self.check is not None else None
        if problem is not None:
            raise BadRowError(self.file, row, None, *problem)
        return example

    def _record(self, i: int) -> dict:
        return self.source.table[int(self.positions[i])]

    def _count(self, err: BadRowError) -> None:
        self.skipped[err.reason] += 1
        self.first.setdefault(err.reason, str(err))
        total = sum(self.skipped.values())
        if self.skipped[err.reason] == 1:
            log.warning("skipping bad rows; first %r: %s", err.reason, err)
        elif total % 1000 == 0:
            log.warning("%s: skipped %d rows so far (%s)", self.file, total, dict(self.skipped))

    def _id(self, row: int) -> str:
        return f"{_stem(self.file)}-row{row}"

    def row_id(self, row: Row) -> str:
        """``<source stem>-row<index>``: stable across reads and usable as a file name."""
        return self._id(row.index)

    @property
    def rows(self) -> "RowView":
        return RowView(self)

    def row(self, i: int) -> Row:
        number = self.source.row_number(int(self.positions[i]))
        parsed, language = self.checker.text(self._record(i), number)
        if self.sizes is not None:
            size = (int(self.sizes[i, 0]), int(self.sizes[i, 1]))
        else:
            size = self.checker.image(parsed, number).size
        return Row(number, parsed.prompt, language, parsed.answer, size, f"{self.file}:row {number}")

    def select(self, indices: Sequence[int]) -> "RowSet":
        indices = np.asarray(indices, dtype=np.int64)
        sizes = self.sizes[indices] if self.sizes is not None else None
        return RowSet(self.source, self.checker, self.positions[indices], sizes, self.on_bad_row, self.validated,
                      self.skipped, self.check)

    def languages(self) -> dict[str, int]:
        return dict(Counter(r.language for r in self.rows))


class RowView(Sequence):
    """``rowset.rows[i]``: the `Row` at position i, read from the table when asked for."""

    def __init__(self, rowset: RowSet):
        self.rowset = rowset

    def __len__(self) -> int:
        return len(self.rowset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.rowset.row(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.rowset.row(i % len(self))


def _stem(label: str) -> str:
    name = Path(label.rstrip("/")).name or "rows"
    stem = Path(name).stem if Path(name).suffix.lower() in BUILDERS else name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def read_rows(path: str | Path, schema: str = "auto", on_bad_row: Literal["raise", "skip"] = "raise",
              min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS, *,
              columns: Optional[dict] = None, validate: Validate = "full", num_proc: Optional[int] = None,
              role: str = "train", require_answer: bool = False,
              max_decode_pixels: int = DECODE_MAX_PIXELS) -> RowSet:
    """Open a source and check its rows (see the module docstring for sources and modes).

    role: which split a multi-split source gives (train | val | test).
    require_answer: rows without an answer are bad rows (SFT needs one).
    """
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    if validate not in ("full", "lazy"):
        raise ValueError(f"validate must be 'full' or 'lazy', got {validate!r}")
    fitted_size(1, 1, min_pixels, max_pixels)  # rejects a bad pixel range before reading
    source = load_source(path, role=role, on_bad_row=on_bad_row, num_proc=num_proc)
    plan = resolve(source.table.column_names, schema, columns, source.label)
    checker = Checker(source.label, plan, source.base_dir, min_pixels, max_pixels, require_answer, max_decode_pixels)
    positions = np.arange(len(source.table), dtype=np.int64)
    if validate == "lazy":
        return RowSet(source, checker, positions, None, on_bad_row, False, source.skipped)
    bad, errors, sizes = _check_all(source, checker, num_proc)
    if len(bad) and on_bad_row == "raise":
        reason, field, detail = errors[0]
        raise BadRowError(source.label, source.row_number(int(bad[0])), field, reason, detail)
    skipped = Counter(source.skipped)
    skipped.update(reason for reason, _, _ in errors)
    keep = np.setdiff1d(positions, bad, assume_unique=True)
    if skipped:
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items()))
        total = len(source.table) + sum(source.skipped.values())
        log.warning("%s: skipped %d of %d rows (%s)", source.label, sum(skipped.values()), total, counts)
    return RowSet(source, checker, positions[keep], sizes[keep], on_bad_row, True, skipped)


def _check_all(source: Source, checker: Checker, num_proc: Optional[int]):
    """Check every row in a `datasets.map` pass: the bad positions, their errors, every fitted size."""
    table = source.table
    key = repr((checker, num_proc is None, None if source.row_numbers is None else source.row_numbers.tobytes()))
    fingerprint = hashlib.sha256(f"{table._fingerprint}|{key}".encode()).hexdigest()[:32]
    result = table.map(_Batch(checker, source.row_numbers), batched=True, batch_size=256, with_indices=True,
                       remove_columns=table.column_names, num_proc=num_proc if num_proc and num_proc > 1 else None,
                       new_fingerprint=fingerprint, desc=f"checking rows of {source.label}")
    data = result.data  # a pyarrow table: nothing below is a Python object per good row
    bad = np.flatnonzero(data.column("reason").is_valid().to_numpy(zero_copy_only=False))
    picked = data.table.take(bad).to_pydict()
    errors = list(zip(picked["reason"], picked["field"], picked["detail"]))
    sizes = np.stack([data.column("width").to_numpy(), data.column("height").to_numpy()], axis=1).astype(np.int32)
    return bad, errors, sizes  # [B] bad positions, [B] (reason, field, detail), [N, 2] fitted sizes


@dataclass(frozen=True)
class _Batch:
    checker: Checker
    numbers: Optional[np.ndarray]

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        return self.checker(batch, indices, self.numbers)
