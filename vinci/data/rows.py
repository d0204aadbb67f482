"""Read image-to-code rows from a data file into `Example`s, checking every row up front.

Formats, all read with the `datasets` library and no network: ``.jsonl``, ``.json`` (a list of
objects, or JSON lines), ``.parquet``, or a folder written by `datasets.Dataset.save_to_disk`.
Two row schemas:

- ``sft`` (VinciCoder SFT / ms-swift): ``messages`` holds a user turn whose text contains
  ``<image>`` and a following assistant turn (the answer); ``images`` lists the image.
  System turns are ignored; with several exchanges the first user turn and the assistant turn
  after it are used.
- ``rl`` (VinciCoder RL / EasyR1): ``problem`` holds the prompt with ``<image>``, ``images``
  the image, ``answer`` (optional) the reference answer.

``schema="auto"`` picks ``sft`` when a ``messages`` column exists, else ``rl`` when a
``problem`` column does. Images are described in `vinci.data.images`. The target language is
read off the prompt (`vinci.tasks.language_from_prompt`); an explicit ``language`` column, when
present and not null, overrides it, and a value there that `vinci.tasks.canonical` does not know
is a bad row ("unknown language"). A prompt without ``<image>`` gets it prepended (as ms-swift
does); a row with more than one image is rejected (one image per row is all vinci handles).

Every row is validated when the file is read (fields, the language, and each image's header and
integrity via ``PIL.Image.verify``); images are decoded lazily in ``__getitem__``. A bad row raises
`BadRowError` naming file, 0-based row index and field, or with ``on_bad_row="skip"`` is dropped
and counted, and one summary line is logged. A file that cannot be read at all always raises.
Row indices are 0-based and count data rows (JSON lines / list items / table rows); each
Example's ``id`` is ``<file stem>-row<index>``, stable across reads and usable as a file name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import datasets
from PIL import Image
from torch.utils.data import Dataset

from vinci import tasks
from vinci.data.images import ImageError, check_image, fit_pixels, fitted_size, load_image

log = logging.getLogger(__name__)

IMAGE = "<image>"
DEFAULT_MIN_PIXELS = 4 * 28 * 28  # Qwen2-VL's processor default
DEFAULT_MAX_PIXELS = 1280 * 28 * 28  # Qwen2-VL's processor default
Schema = Literal["auto", "sft", "rl"]
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class BadRowError(ValueError):
    """A row (or a whole file, when ``row`` is None) that cannot be used, with where and why."""

    def __init__(self, file: str, row: Optional[int], field: Optional[str], reason: str, detail: str):
        where = file if row is None else f"{file}: row {row}"
        where += f": field '{field}'" if field else ""
        super().__init__(f"{where}: {reason}: {detail}")
        self.file, self.row, self.field, self.reason, self.detail = file, row, field, reason, detail


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
    """Everything about a validated row except the decoded image (cheap to keep for all rows)."""

    index: int  # 0-based row index in the file
    prompt: str
    language: str
    answer: Optional[str]
    image_size: tuple[int, int]  # (width, height) after fitting into the pixel range
    source: str


def _field(record: dict, name: str, file: str, index: int) -> Any:
    value = record.get(name)
    if value is None:
        raise BadRowError(file, index, name, "missing field", "absent or null")
    return value


def _text(value: Any, file: str, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise BadRowError(file, index, field, "bad field", f"expected text, got {type(value).__name__}")
    return value


def _sft_turns(record: dict, file: str, index: int) -> tuple[str, str]:
    """(user prompt, assistant answer) of an ms-swift ``messages`` list."""
    messages = _field(record, "messages", file, index)
    if not isinstance(messages, list):
        raise BadRowError(file, index, "messages", "bad field", "expected a list of turns")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if "user" not in roles:
        raise BadRowError(file, index, "messages", "missing field", "no user turn")
    user = roles.index("user")
    if "assistant" not in roles[user + 1 :]:
        raise BadRowError(file, index, "messages", "missing field", "no assistant turn after the user turn")
    helper = roles.index("assistant", user + 1)
    prompt = _text(messages[user].get("content"), file, index, f"messages[{user}].content")
    answer = messages[helper].get("content")
    if answer is None:
        raise BadRowError(file, index, f"messages[{helper}].content", "missing field", "absent or null")
    answer = _text(answer, file, index, f"messages[{helper}].content")
    if not answer.strip():
        raise BadRowError(file, index, f"messages[{helper}].content", "empty answer", "assistant turn is empty")
    return prompt, answer


def _rl_fields(record: dict, file: str, index: int) -> tuple[str, Optional[str]]:
    prompt = _text(_field(record, "problem", file, index), file, index, "problem")
    answer = record.get("answer")
    if answer is not None:
        answer = _text(answer, file, index, "answer")
        answer = answer if answer.strip() else None
    return prompt, answer


def _image_ref(record: dict, file: str, index: int) -> Any:
    images = _field(record, "images", file, index)
    if not isinstance(images, (list, tuple)):
        images = [images]  # a single reference instead of a list
    if not images or images[0] is None:
        raise BadRowError(file, index, "images", "missing image", "no image listed")
    if len(images) > 1:
        raise BadRowError(file, index, "images", "multiple images", f"{len(images)} images, vinci uses one per row")
    return images[0]


def _prompt_with_placeholder(prompt: str, file: str, index: int, field: str) -> str:
    count = prompt.count(IMAGE)
    if count > 1:
        raise BadRowError(file, index, field, "multiple images", f"{count} {IMAGE} placeholders")
    return prompt if count == 1 else IMAGE + prompt


def _language(record: dict, prompt: str, file: str, index: int) -> str:
    explicit = record.get("language")
    if explicit is None:
        return tasks.language_from_prompt(prompt)
    try:
        return tasks.canonical(_text(explicit, file, index, "language"))
    except ValueError as err:
        raise BadRowError(file, index, "language", "unknown language", str(err)) from err


def _resolve_schema(columns: Sequence[str], schema: str, file: str) -> str:
    if schema == "auto":
        if "messages" in columns:
            return "sft"
        if "problem" in columns:
            return "rl"
        raise BadRowError(file, None, "messages|problem", "missing field",
                          f"no 'messages' (SFT) or 'problem' (RL) column; columns: {list(columns)}")
    if schema not in ("sft", "rl"):
        raise ValueError(f"schema must be 'auto', 'sft' or 'rl', got {schema!r}")
    return schema


class RowSet(Dataset):
    """Validated rows of one data file; ``rowset[i]`` decodes and resizes the image of row i.

    ``skipped`` counts dropped rows by reason (empty unless ``on_bad_row="skip"``);
    ``rows`` holds per-row `Row` metadata (prompt, language, fitted image size) without
    decoding any image, for cheap filtering; ``select(indices)`` returns a RowSet with those positions only.
    """

    def __init__(self, file: str, schema: str, base_dir: Path, images: Any, rows: list[Row],
                 skipped: dict[str, int], min_pixels: int, max_pixels: int):
        self.file, self.schema, self.base_dir = file, schema, base_dir
        self._images = images  # indexable: row index -> image reference (datasets column or list)
        self.rows, self.skipped = rows, skipped
        self.min_pixels, self.max_pixels = min_pixels, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        row = self.rows[i]
        try:
            image = load_image(_first(self._images[row.index]), self.base_dir)
        except ImageError as err:  # the file changed or broke after validation
            raise BadRowError(self.file, row.index, "images", err.reason, err.detail) from err
        image = fit_pixels(image, self.min_pixels, self.max_pixels)
        return Example(image, row.prompt, row.language, row.answer, row.source, self.row_id(row))

    def row_id(self, row: Row) -> str:
        """``<file stem>-row<index>``: stable across reads and usable as a file name."""
        return f"{Path(self.file).resolve().stem}-row{row.index}"

    def select(self, indices: Sequence[int]) -> "RowSet":
        rows = [self.rows[i] for i in indices]
        return RowSet(self.file, self.schema, self.base_dir, self._images, rows, dict(self.skipped),
                      self.min_pixels, self.max_pixels)

    def languages(self) -> dict[str, int]:
        return dict(Counter(r.language for r in self.rows))


def _first(images: Any) -> Any:
    return images[0] if isinstance(images, (list, tuple)) else images


def read_rows(path: str | Path, schema: Schema = "auto", on_bad_row: Literal["raise", "skip"] = "raise",
              min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS) -> RowSet:
    """Read and validate every row of a data file (see the module docstring for formats)."""
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    fitted_size(1, 1, min_pixels, max_pixels)  # rejects a bad pixel range before reading
    file = str(path)
    path = Path(path)
    table = load_table(path)
    schema = _resolve_schema(table.column_names, schema, file)
    base_dir = path if path.is_dir() else path.parent
    rows, skipped = [], Counter()
    for index, record in enumerate(table):
        try:
            rows.append(_validate(record, index, schema, file, base_dir, min_pixels, max_pixels))
        except BadRowError as err:
            if on_bad_row == "raise":
                raise
            skipped[err.reason] += 1
    if skipped:
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items()))
        log.warning("%s: skipped %d of %d rows (%s)", file, sum(skipped.values()), len(table), counts)
    images = table.select_columns(["images"]) if "images" in table.column_names else []
    return RowSet(file, schema, base_dir, _ImageColumn(images), rows, dict(skipped), min_pixels, max_pixels)


def load_table(path: Path) -> datasets.Dataset:
    """The file's rows as a `datasets.Dataset` (in memory; a save_to_disk folder stays mapped)."""
    file = str(path)
    if not path.exists():
        raise BadRowError(file, None, None, "unreadable file", "no such file or folder")
    if path.is_file() and path.suffix.lower() not in BUILDERS:
        raise BadRowError(file, None, None, "unreadable file",
                          f"unsupported format {path.suffix!r}; use {', '.join(BUILDERS)} or a save_to_disk folder")
    if path.is_file() and path.stat().st_size == 0:
        raise BadRowError(file, None, None, "unreadable file", "the file is empty")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            table = datasets.load_from_disk(str(path))
        else:  # a throwaway cache: nothing stale is reused and nothing is left behind
            with tempfile.TemporaryDirectory(prefix="vinci-rows-") as cache:
                table = datasets.load_dataset(BUILDERS[path.suffix.lower()], data_files=str(path),
                                              split="train", cache_dir=cache, keep_in_memory=True)
    except Exception as err:  # datasets and pyarrow raise many types for one cause: a bad file
        row, detail = _locate_json_error(path) if path.suffix.lower() in (".json", ".jsonl") else (None, None)
        raise BadRowError(file, row, None, "unreadable file", detail or _short(err)) from err
    finally:
        if bars:
            datasets.enable_progress_bars()
    if isinstance(table, datasets.DatasetDict):
        if len(table) != 1:
            raise BadRowError(file, None, None, "unreadable file",
                              f"a DatasetDict with splits {list(table)}; point at one split's folder")
        table = next(iter(table.values()))
    return _undecoded(table)


def _undecoded(table: datasets.Dataset) -> datasets.Dataset:
    """The same rows with `datasets.Image` features left as {bytes, path} dicts.

    Decoding is ours: a corrupt image must become a BadRowError for its row, not an exception
    from inside `datasets` iteration. Only the feature metadata changes; the arrow data is shared.
    """
    feature = table.features.get("images")
    raw = datasets.Image(decode=False)
    if isinstance(feature, datasets.Image):
        changed = raw
    elif dataclasses.is_dataclass(feature) and isinstance(getattr(feature, "feature", None), datasets.Image):
        changed = dataclasses.replace(feature, feature=raw)  # List / LargeList of images
    else:
        return table
    features = table.features.copy()
    features["images"] = changed
    return datasets.Dataset(table.data, info=datasets.DatasetInfo(features=features))


def _locate_json_error(path: Path) -> tuple[Optional[int], Optional[str]]:
    """The 0-based row and reason of the first JSON syntax error, found with the json module."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return None, None  # one valid JSON document: the problem is not syntax
    except json.JSONDecodeError as whole:
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            return None, f"invalid JSON at line {whole.lineno} column {whole.colno}: {whole.msg}"
    rows = [line for line in text.splitlines() if line.strip()]
    for index, line in enumerate(rows):
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            return index, f"invalid JSON ({err.msg} at column {err.colno})"
    return None, None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text[:300]


class _ImageColumn:
    """Row index -> image reference, reading one row of the `datasets` table at a time."""

    def __init__(self, table: Any):
        self.table = table

    def __getitem__(self, index: int) -> Any:
        return self.table[index]["images"]


def _validate(record: dict, index: int, schema: str, file: str, base_dir: Path,
              min_pixels: int, max_pixels: int) -> Row:
    if schema == "sft":
        prompt, answer = _sft_turns(record, file, index)
        field = "messages"
    else:
        prompt, answer = _rl_fields(record, file, index)
        field = "problem"
    prompt = _prompt_with_placeholder(prompt, file, index, field)
    language = _language(record, prompt, file, index)
    ref = _image_ref(record, file, index)
    try:
        width, height = check_image(ref, base_dir)
    except ImageError as err:
        raise BadRowError(file, index, "images", err.reason, err.detail) from err
    size = fitted_size(width, height, min_pixels, max_pixels)
    return Row(index, prompt, language, answer, size, f"{file}:row {index}")
