"""Where rows come from: a file, a folder of shards, a glob, a save_to_disk folder or a hub id.

    data.train: rows.jsonl | rows.parquet | rows.json          one file
                data/ (train-00000-of-00003.parquet, ...)      a folder of shards (the hub's layout)
                "data/*.parquet"                               a glob
                saved/ (state.json or dataset_dict.json)       a `datasets` save_to_disk folder
                org/name | org/name:config | org/name@split | org/name:config@split   a hub dataset

Everything is read by `datasets` (`load_dataset`, `load_from_disk`) into its normal
memory-mapped arrow cache (``HF_DATASETS_CACHE``), so a table of any size costs address space,
not RAM, and a second read reuses the cache. ``@split`` also works after a local folder.

Splits: a source with several splits and none named gives the split that fits the role
(train: ``train``; val: ``validation``/``val``/``valid``/``dev``; test: ``test``), or an error
listing the splits. Hub ids: online, `datasets` fetches and caches them as usual. Offline
(``HF_HUB_OFFLINE=1``), a snapshot that ``hf download`` put in the hub cache is read from
there, else the prepared `datasets` cache is used; a dataset in neither is a `BadRowError`
("not in the local cache") that gives the ``hf download ... --repo-type dataset`` command.

Row numbers in errors count rows of the whole source, in file-name order for shards and globs.
"""

from __future__ import annotations

import glob as globbing
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import datasets
import numpy as np

from vinci.data.errors import BadRowError
from vinci.data.jsonl import clean_copy, is_json_lines, line_errors, syntax_errors

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SAVED = ("state.json", "dataset_dict.json", "dataset_info.json")  # save_to_disk markers
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?$")
ROLE_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}


@dataclass
class Source:
    label: str  # how messages name it: the path, glob or hub id as given
    kind: str  # file | folder | glob | saved | hub
    table: datasets.Dataset  # its rows, memory-mapped; image features left undecoded
    base_dir: Path  # where relative image paths resolve
    row_numbers: Optional[np.ndarray] = None  # [len(table)] row number in the source of each table row; None: the same
    skipped: Counter = field(default_factory=Counter)  # rows dropped before the table (bad JSON lines), by reason

    def row_number(self, position: int) -> int:
        return int(self.row_numbers[position]) if self.row_numbers is not None else position


def load_source(spec: str | Path, role: str = "train", on_bad_row: str = "raise",
                num_proc: Optional[int] = None) -> Source:
    """Open a source (see the module docstring); BadRowError (row None) when it cannot be read."""
    label = str(spec)
    path, split = _split_suffix(label)
    if any(c in label for c in "*?["):
        return _load_glob(label, role, num_proc)
    if path.exists():
        if path.is_file():
            return _load_file(path, on_bad_row, num_proc)
        return _load_folder(path, label, split, role, num_proc)
    match = HUB_ID.match(label)
    if match and path.suffix.lower() not in BUILDERS and not label.startswith((".", "/", "~")):
        return _load_hub(label, match["repo"], match["config"], match["split"], role, num_proc)
    raise BadRowError(label, None, None, "unreadable file", "no such file or folder (nor a hub id org/name)")


def _split_suffix(label: str) -> tuple[Path, Optional[str]]:
    """`folder@test` -> (folder, "test") when `folder` exists and `folder@test` does not."""
    path = Path(label).expanduser()
    head, sep, split = label.rpartition("@")
    if sep and not path.exists() and Path(head).expanduser().is_dir():
        return Path(head).expanduser(), split
    return path, None


def _load_dataset(label: str, *args, **kwargs):
    try:
        return datasets.load_dataset(*args, **kwargs)
    except BadRowError:
        raise
    except Exception as err:  # datasets and pyarrow raise many types for one cause: a bad file
        raise BadRowError(label, None, None, "unreadable file", short(err)) from None


def _load_file(path: Path, on_bad_row: str, num_proc: Optional[int]) -> Source:
    file = str(path)
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise BadRowError(file, None, None, "unreadable file",
                          f"unsupported format {path.suffix!r}; use {', '.join(BUILDERS)}, a folder of them, or a save_to_disk folder")
    if path.stat().st_size == 0:
        raise BadRowError(file, None, None, "unreadable file", "the file is empty")
    if builder == "json" and is_json_lines(path):
        return _load_json_lines(path, on_bad_row, num_proc)
    try:
        table = datasets.load_dataset(builder, data_files=file, split="train", num_proc=num_proc)
    except Exception as err:
        detail = _json_array_error(path) if builder == "json" else None
        raise BadRowError(file, None, None, "unreadable file", detail or short(err)) from None
    return Source(file, "file", undecoded(table), path.parent)


def _load_json_lines(path: Path, on_bad_row: str, num_proc: Optional[int]) -> Source:
    """JSON lines: bad lines are found before pyarrow reads the file (see vinci.data.jsonl)."""
    file, skipped = str(path), Counter()
    bad = line_errors(path)
    target, numbers = path, None
    for attempt in range(2):
        if bad:
            if on_bad_row == "raise":
                raise bad[0]
            skipped.update(err.reason for err in bad)
            target, numbers = clean_copy(path, {err.row for err in bad}, Path(datasets.config.HF_DATASETS_CACHE) / "vinci-clean")
            if len(numbers) == 0:
                raise BadRowError(file, None, None, "unreadable file", f"no usable line: {dict(skipped)}")
        try:
            table = datasets.load_dataset("json", data_files=str(target), split="train", num_proc=num_proc)
            return Source(file, "file", undecoded(table), path.parent, numbers, skipped)
        except Exception as err:
            more = [] if attempt else [e for e in syntax_errors(path) if e.row not in {b.row for b in bad}]
            if not more:
                raise BadRowError(file, None, None, "unreadable file", short(err)) from None
            bad = sorted(bad + more, key=lambda e: e.row)
    raise AssertionError("unreachable")


def _load_glob(pattern: str, role: str, num_proc: Optional[int]) -> Source:
    files = sorted(globbing.glob(str(Path(pattern).expanduser()), recursive=True))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise BadRowError(pattern, None, None, "unreadable file", "no file matches the pattern")
    kinds = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds or len(kinds) > 1:
        found = sorted({Path(f).suffix for f in files})
        raise BadRowError(pattern, None, None, "unreadable file", f"matches {found}; a glob must match one of {', '.join(BUILDERS)}")
    table = _load_dataset(pattern, kinds.pop(), data_files=files, split="train", num_proc=num_proc)
    return Source(pattern, "glob", undecoded(table), Path(_glob_root(pattern)).expanduser())


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))]]
    return str(Path(*fixed)) if fixed else "."


def _load_folder(path: Path, label: str, split: Optional[str], role: str, num_proc: Optional[int]) -> Source:
    if any((path / marker).is_file() for marker in SAVED):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise BadRowError(label, None, None, "unreadable file", short(err)) from None
        return Source(label, "saved", undecoded(pick_split(loaded, split, role, label)), path)
    if not any(p.suffix.lower() in BUILDERS for p in path.rglob("*") if p.is_file()):
        raise BadRowError(label, None, None, "unreadable file",
                          f"neither a save_to_disk folder nor a folder of {', '.join(BUILDERS)} files")
    loaded = _load_dataset(label, str(path), num_proc=num_proc)
    return Source(label, "folder", undecoded(pick_split(loaded, split, role, label)), path)


def _load_hub(label: str, repo: str, config: Optional[str], split: Optional[str], role: str,
              num_proc: Optional[int]) -> Source:
    fetch = f"hf download {repo} --repo-type dataset"
    if datasets.config.HF_HUB_OFFLINE:
        snapshot = cached_snapshot(repo)
        if snapshot is not None:
            loaded = _load_dataset(label, str(snapshot), name=config, num_proc=num_proc)
            return Source(label, "hub", undecoded(pick_split(loaded, split, role, label)), snapshot)
    try:
        loaded = datasets.load_dataset(repo, name=config, split=split, num_proc=num_proc)
    except Exception as err:
        if datasets.config.HF_HUB_OFFLINE:
            raise BadRowError(label, None, None, "not in the local cache",
                              f"the hub is offline (HF_HUB_OFFLINE=1) and {repo} is not cached; "
                              f"fetch it while online with `{fetch}`") from None
        raise BadRowError(label, None, None, "unreadable file",
                          f"{short(err)}; to read it offline later, fetch it with `{fetch}`") from None
    return Source(label, "hub", undecoded(pick_split(loaded, split, role, label)), Path("."))


def cached_snapshot(repo: str) -> Optional[Path]:
    """The hub cache's snapshot folder of a dataset repo (what `hf download` writes), or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, repo_type="dataset", local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not cached, which is an answer
        return None


def pick_split(loaded, split: Optional[str], role: str, label: str) -> datasets.Dataset:
    """One split of a DatasetDict: the named one, the only one, or the one that fits the role."""
    if isinstance(loaded, datasets.Dataset):
        return loaded
    names = list(loaded)
    if split is not None:
        if split not in loaded:
            raise BadRowError(label, None, None, "unreadable file", f"no split {split!r}; splits: {names}")
        return loaded[split]
    if len(names) == 1:
        return loaded[names[0]]
    for name in ROLE_SPLITS.get(role, (role,)):
        if name in loaded:
            return loaded[name]
    raise BadRowError(label, None, None, "unreadable file",
                      f"a DatasetDict with splits {names}; name one: {label}@{names[0]}")


def undecoded(table: datasets.Dataset) -> datasets.Dataset:
    """The same rows with every `datasets.Image` feature (nested too) left as {bytes, path} dicts.

    Decoding is ours: a corrupt image must become a BadRowError for its row, not an exception
    from inside `datasets` iteration. Only the feature metadata changes; the arrow data is shared.
    """
    features = _raw(table.features)
    if features == table.features:
        return table
    return datasets.Dataset(table.data, info=datasets.DatasetInfo(features=datasets.Features(features)),
                            fingerprint=f"{table._fingerprint}-undecoded")


def _raw(feature):
    import dataclasses

    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False)
    if isinstance(feature, dict):
        return type(feature)({k: _raw(v) for k, v in feature.items()}) if not isinstance(feature, datasets.Features) \
            else datasets.Features({k: _raw(v) for k, v in feature.items()})
    if isinstance(feature, (list, tuple)):
        return type(feature)(_raw(v) for v in feature)
    if dataclasses.is_dataclass(feature) and hasattr(feature, "feature"):
        return dataclasses.replace(feature, feature=_raw(feature.feature))
    return feature


def _json_array_error(path: Path) -> Optional[str]:
    import json

    try:
        json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        return f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
    return None


def short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text[:300]
