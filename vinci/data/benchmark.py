"""Read a benchmark folder as evaluation `Example`s: reference programs, bare images, or rows.

Three kinds of input, told apart by ``kind="auto"`` from what the path holds:

- ``programs``: a folder of reference programs, ``NAME.py`` (python), ``NAME.svg``,
  ``NAME.html``/``NAME.htm`` or ``NAME.tex`` (latex), ChartMimic style. The reference image is
  ``NAME.png`` beside the program when there is one. When there is none (Design2Code pages,
  icon and TikZ folders) the program is rendered in the sandboxed `RenderPool` and the PNG is
  cached in ``references_dir``, never in the input folder. Prompt: the task's direct prompt;
  answer: the program, fenced; source: the program's path; id: NAME.
- ``images``: a folder of ``.png/.jpg/.jpeg/.webp`` files and no programs, for ``predict``.
  Nothing in it says what code to write, so ``language`` must be given; the answer is None.
- ``rows``: a ``.jsonl``/``.json``/``.parquet`` file or a ``save_to_disk`` folder, read by
  `vinci.data.rows.read_rows` with the RL schema.

Auto picks ``rows`` for a rows file or a saved dataset, else ``programs`` when the folder holds
any program, else ``images`` when it holds any image, and otherwise raises, saying what it found.
Folders may mix languages (each program's language is its extension); ``language`` then keeps
only that language's programs (or rows). Images in a programs folder that belong to no program
are ignored and counted in a log line.

Caching: the default ``references_dir`` is ``artifacts/references/<folder name>-<hash>``, the hash
taken over the folder's absolute path and the render options. Each cached file is
``NAME.<hash>.png`` with the hash over language, program text and render options, so an edited
program or changed options never reuses a stale render, and re-runs render nothing. Failed
renders are not cached (a timeout under load may pass next time). PNGs are written atomically.

Bad entries (unreadable or empty program, a reference that fails to render, a corrupt image, two
files sharing a NAME) raise `BadRowError` naming the file, or with ``on_bad_row="skip"`` are
dropped, counted by reason in ``skipped``, and summed up in one log line.

Simplifications: only the folder's top level is read (no recursion); entries are in name order
and ``limit`` takes the first N of them before bad ones are dropped; images are fitted into
[min_pixels, max_pixels] as `read_rows` does, and decoded lazily in ``__getitem__``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional, Sequence

from torch.utils.data import Dataset

from vinci import tasks
from vinci.data.images import ImageError, check_image, fit_pixels, fitted_size, load_image
from vinci.data.rows import BUILDERS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, BadRowError, Example, RowSet, read_rows
from vinci.render.options import RenderOptions

log = logging.getLogger(__name__)

Kind = Literal["auto", "programs", "images", "rows"]
KINDS = ("auto", "programs", "images", "rows")
PROGRAMS = {".py": "python", ".svg": "svg", ".html": "html", ".htm": "html", ".tex": "latex"}
IMAGES = (".png", ".jpg", ".jpeg", ".webp")
REFERENCES_ROOT = Path("artifacts/references")


@dataclass(frozen=True)
class Entry:
    """One validated benchmark entry, without its decoded image (cheap to keep for all)."""

    id: str  # NAME: the file stem
    prompt: str
    language: str  # canonical
    answer: Optional[str]  # the fenced reference program, None for a bare image
    image_path: Path  # the reference PNG (beside the program or in the cache) or the bare image
    image_size: tuple[int, int]  # (width, height) after fitting into the pixel range
    source: str  # the program's (or bare image's) path


class BenchmarkSet(Dataset):
    """Validated entries of a benchmark folder; ``benchmark[i]`` decodes and fits image i.

    ``rows`` holds the `Entry` metadata (same role as `RowSet.rows`, so length filtering works
    on both), ``skipped`` counts dropped entries by reason, ``rendered`` counts references
    rendered by this read (0 when every one came from a PNG or the cache).
    """

    def __init__(self, folder: Path, kind: str, rows: list[Entry], skipped: dict[str, int],
                 rendered: int, min_pixels: int, max_pixels: int):
        self.folder, self.kind, self.rows = folder, kind, rows
        self.skipped, self.rendered = skipped, rendered
        self.min_pixels, self.max_pixels = min_pixels, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        entry = self.rows[i]
        try:
            image = load_image(str(entry.image_path), entry.image_path.parent)
        except ImageError as err:  # the file changed or broke after validation
            raise BadRowError(str(entry.image_path), None, None, err.reason, err.detail) from err
        image = fit_pixels(image, self.min_pixels, self.max_pixels)
        return Example(image, entry.prompt, entry.language, entry.answer, entry.source, entry.id)

    def select(self, indices: Sequence[int]) -> "BenchmarkSet":
        rows = [self.rows[i] for i in indices]
        return BenchmarkSet(self.folder, self.kind, rows, dict(self.skipped), self.rendered,
                            self.min_pixels, self.max_pixels)

    def languages(self) -> dict[str, int]:
        return dict(Counter(e.language for e in self.rows))


def read_benchmark(folder: str | Path, kind: Kind = "auto", language: Optional[str] = None,
                   references_dir: Optional[str | Path] = None, render_options: Optional[RenderOptions] = None,
                   workers: int = 2, timeout: float = 30.0, min_pixels: int = DEFAULT_MIN_PIXELS,
                   max_pixels: int = DEFAULT_MAX_PIXELS, on_bad_row: Literal["raise", "skip"] = "raise",
                   limit: Optional[int] = None) -> BenchmarkSet | RowSet:
    """Read a benchmark folder or rows file (see the module docstring for kinds and caching).

    language: required for a folder of bare images; otherwise keeps only that language.
    references_dir: where renders of programs without a PNG are cached (default under artifacts/).
    render_options, workers, timeout: how those references are rendered (`RenderPool` arguments).
    """
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    fitted_size(1, 1, min_pixels, max_pixels)  # rejects a bad pixel range before reading
    path = Path(folder)
    if not path.exists():
        raise BadRowError(str(path), None, None, "unreadable file", "no such file or folder")
    language = tasks.canonical(language) if language else None
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "rows":
        return _read_rows(path, language, on_bad_row, min_pixels, max_pixels, limit)
    if not path.is_dir():
        raise ValueError(f"{path}: kind={kind!r} needs a folder")
    skips = _Skips(on_bad_row)
    if kind == "images":
        entries = _image_entries(path, language, limit, skips, min_pixels, max_pixels)
        rendered = 0
    else:
        options = render_options or RenderOptions()
        cache = Path(references_dir) if references_dir else default_references_dir(path, options)
        entries, rendered = _program_entries(path, language, limit, skips, cache, options, workers, timeout,
                                             min_pixels, max_pixels)
    skips.summarise(path, len(entries))
    return BenchmarkSet(path, kind, entries, dict(skips.counts), rendered, min_pixels, max_pixels)


def detect_kind(path: Path) -> str:
    """What `kind="auto"` reads this path as; ValueError saying what was found when unsure."""
    if path.is_file():
        if path.suffix.lower() in BUILDERS:
            return "rows"
        raise ValueError(f"{path}: a file is read as rows and must end in {', '.join(BUILDERS)}")
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return "rows"  # a datasets.save_to_disk folder
    suffixes = Counter(p.suffix.lower() or p.name for p in _files(path))
    if any(s in PROGRAMS for s in suffixes):
        return "programs"
    if any(s in IMAGES for s in suffixes):
        return "images"
    found = ", ".join(f"{n} {s}" for s, n in suffixes.most_common(6)) or "nothing"
    hint = "; point at a rows file itself" if any(s in BUILDERS for s in suffixes) else ""
    raise ValueError(f"{path}: cannot tell what this benchmark folder holds: no programs "
                     f"({', '.join(PROGRAMS)}) or images ({', '.join(IMAGES)}); found {found}{hint}")


def default_references_dir(folder: Path, options: RenderOptions) -> Path:
    """artifacts/references/<folder name>-<hash of its absolute path and the render options>."""
    key = json.dumps([str(folder.resolve()), options.to_dict()], sort_keys=True)
    return REFERENCES_ROOT / f"{folder.resolve().name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def reference_file(cache: Path, name: str, language: str, code: str, options: RenderOptions) -> Path:
    """The cached render of one program: NAME.<hash of language, code and options>.png."""
    key = json.dumps([language, code, options.to_dict()], sort_keys=True)
    return cache / f"{name}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.png"


class _Skips:
    """Raise a bad entry's error, or count it by reason (on_bad_row="skip")."""

    def __init__(self, on_bad_row: str):
        self.on_bad_row, self.counts = on_bad_row, Counter()

    def bad(self, err: BadRowError) -> None:
        if self.on_bad_row == "raise":
            raise err
        self.counts[err.reason] += 1

    def summarise(self, folder: Path, kept: int) -> None:
        if self.counts:
            counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
            total = kept + sum(self.counts.values())
            log.warning("%s: skipped %d of %d entries (%s)", folder, sum(self.counts.values()), total, counts)


def _files(folder: Path) -> list[Path]:
    """Visible top-level files in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _by_name(files: list[Path], skips: _Skips) -> list[Path]:
    """Files whose stem no other file in the list shares; the others are ambiguous bad entries."""
    stems = Counter(p.stem for p in files)
    for p in files:
        if stems[p.stem] > 1:
            others = sorted(q.name for q in files if q.stem == p.stem)
            reason = f"{' and '.join(others)} share the name {p.stem!r}"
            skips.bad(BadRowError(str(p), None, None, "ambiguous name", reason))
    return [p for p in files if stems[p.stem] == 1]


def _entry(image: Path, skips: _Skips, min_pixels: int, max_pixels: int, **fields) -> Optional[Entry]:
    """An Entry for a checked image, or None (after skips.bad) when the image is unusable."""
    image = image.resolve()  # absolute: the dataset keeps working if the working directory changes
    try:
        width, height = check_image(str(image), image.parent)
    except ImageError as err:
        skips.bad(BadRowError(str(image), None, None, err.reason, err.detail))
        return None
    return Entry(image_path=image, image_size=fitted_size(width, height, min_pixels, max_pixels), **fields)


def _image_entries(folder: Path, language: Optional[str], limit: Optional[int], skips: _Skips,
                   min_pixels: int, max_pixels: int) -> list[Entry]:
    if language is None:
        raise ValueError(f"{folder}: a folder of bare images does not say what code to write: "
                         f"set language ({', '.join(tasks.LANGUAGES)})")
    images = [p for p in _files(folder) if p.suffix.lower() in IMAGES]
    if not images:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGES)}) in this folder")
    prompt = tasks.TASKS[language].direct_prompt
    entries = []
    for image in _by_name(images[:limit], skips):
        entry = _entry(image, skips, min_pixels, max_pixels, id=image.stem, prompt=prompt, language=language,
                       answer=None, source=str(image))
        entries += [entry] if entry else []
    return entries


@dataclass(frozen=True)
class _Program:
    path: Path
    language: str
    code: str
    image: Optional[Path]  # NAME.png beside it, or the cache file once rendered


def _read_program(path: Path, skips: _Skips) -> Optional[_Program]:
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        skips.bad(BadRowError(str(path), None, None, "unreadable program", str(err)))
        return None
    if not code.strip():
        skips.bad(BadRowError(str(path), None, None, "empty program", "the file holds no code"))
        return None
    png = path.with_suffix(".png")
    return _Program(path, PROGRAMS[path.suffix.lower()], code, png if png.is_file() else None)


def _program_entries(folder: Path, language: Optional[str], limit: Optional[int], skips: _Skips, cache: Path,
                     options: RenderOptions, workers: int, timeout: float,
                     min_pixels: int, max_pixels: int) -> tuple[list[Entry], int]:
    files = _files(folder)
    paths = [p for p in files if p.suffix.lower() in PROGRAMS]
    if language:
        paths = [p for p in paths if PROGRAMS[p.suffix.lower()] == language]
    if not paths:
        wanted = f"{language} programs" if language else "programs"
        raise ValueError(f"{folder}: no {wanted} ({', '.join(PROGRAMS)}) in this folder")
    _log_unused_images(folder, files, paths)
    programs = [program for path in _by_name(paths[:limit], skips) if (program := _read_program(path, skips))]
    programs, rendered = _with_references(programs, skips, cache, options, workers, timeout)
    entries = []
    for program in programs:
        task = tasks.TASKS[program.language]
        entry = _entry(program.image, skips, min_pixels, max_pixels, id=program.path.stem, prompt=task.direct_prompt,
                       language=program.language, answer=tasks.fence(program.code, program.language),
                       source=str(program.path))
        entries += [entry] if entry else []
    return entries, rendered


def _log_unused_images(folder: Path, files: list[Path], programs: list[Path]) -> None:
    names = {p.stem for p in programs}
    unused = [p for p in files if p.suffix.lower() in IMAGES and p.stem not in names]
    if unused:
        log.info("%s: ignoring %d images that belong to no program read (e.g. %s)", folder, len(unused), unused[0].name)


def _with_references(programs: list[_Program], skips: _Skips, cache: Path, options: RenderOptions,
                     workers: int, timeout: float) -> tuple[list[_Program], int]:
    """Every program with a reference image: its PNG, a cached render, or a fresh render.

    Returns the programs that have one (a failed render is a bad entry) and how many were rendered.
    """
    done, todo = [], []
    for program in programs:
        if program.image is not None:
            done.append(program)
            continue
        target = reference_file(cache, program.path.stem, program.language, program.code, options)
        (done if target.is_file() else todo).append(replace(program, image=target))
    if not todo:
        return done, 0
    errors = _render(todo, cache, options, workers, timeout)
    for program in todo:
        if program.path in errors:
            skips.bad(BadRowError(str(program.path), None, None, "reference render failed", errors[program.path]))
        else:
            done.append(program)
    order = {p.path: i for i, p in enumerate(programs)}
    return sorted(done, key=lambda p: order[p.path]), len(todo) - len(errors)


def _render(todo: list[_Program], cache: Path, options: RenderOptions, workers: int,
            timeout: float) -> dict[Path, str]:
    """Render each program to its cache file; returns {program path: error} for the failures."""
    from vinci.render import RenderJob, RenderPool  # starts nothing until called

    from tqdm.auto import tqdm

    log.info("rendering %d reference images into %s", len(todo), cache)
    results = []
    with RenderPool(workers=workers, timeout=timeout, options=options) as pool, \
            tqdm(total=len(todo), desc="rendering references", unit="image", disable=None) as bar:
        for start in range(0, len(todo), 4 * workers):  # a few per worker between bar updates
            chunk = todo[start:start + 4 * workers]
            results += pool.render_many([RenderJob(p.language, p.code) for p in chunk])
            bar.update(len(chunk))
    cache.mkdir(parents=True, exist_ok=True)
    errors = {}
    for program, result in zip(todo, results):
        if result.ok:
            _save_png(result.image, program.image)
        else:
            errors[program.path] = f"{result.kind}: {result.error}"
    if errors:
        log.warning("%d of %d reference renders failed", len(errors), len(todo))
    return errors


def _save_png(image, target: Path) -> None:
    """Write atomically, so a reader (or another rank) never sees half a file."""
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, format="PNG")
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read_rows(path: Path, language: Optional[str], on_bad_row: str, min_pixels: int, max_pixels: int,
               limit: Optional[int]) -> RowSet:
    rows = read_rows(path, schema="rl", on_bad_row=on_bad_row, min_pixels=min_pixels, max_pixels=max_pixels)
    keep = [i for i, row in enumerate(rows.rows) if language is None or row.language == language]
    return rows.select(keep[:limit])
