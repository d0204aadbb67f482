"""The LightningDataModule: where rows come from, which collate they get, and length filtering.

    rows (file, shard folder, glob, save_to_disk dir, hub id; or the built-in synthetic corpus)
      -> read_rows -> Example -> (over-long rows dropped) -> SFTCollator | RLCollator

With ``validate: lazy`` (the default) each row is checked, and its length counted, when a
batch first reads it, so the first step comes as fast for 1.6M rows as for 1,000: a bad or
over-long row is skipped and counted then (``on_bad_row: skip``), or raises naming file, row
and field (``raise``; the last checkpoint stands). Setup reads one row, so a source that
yields nothing usable fails before training. ``validate: full`` checks every row and every
length up front (``num_proc`` processes, progress bars), for an exact count before step 1.

With `synthetic` set and no explicit files, the corpus is built in `prepare_data` when its
manifest is missing, and the split files of the chosen stage's schema are read from it.
With `benchmark` set, `validate`, `test` and `predict` read that folder instead
(`vinci.data.benchmark.read_benchmark`); `fit` keeps its own train/val splits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vinci.data.collate import RLCollator, SFTCollator
from vinci.render.options import RenderOptions

log = logging.getLogger(__name__)


@dataclass
class Synthetic:
    """The procedural corpus (vinci.data.synth): built once, then read like any other files."""

    dir: str = "artifacts/synth"  # where the corpus is written and read
    seed: int = 0  # same seed, same corpus
    n_train: int = 300  # unique programs per language in the train split
    n_val: int = 16  # ... in the validation split
    n_test: int = 48  # ... in the held-out test split
    languages: list[str] = field(default_factory=lambda: ["python", "svg", "html", "latex"])
    refine_fraction: float = 0.5  # share of programs that also get a visual-refinement row (image + flawed code)


@dataclass
class Benchmark:
    """A benchmark served to validate/test/predict in place of the splits (vinci.data.benchmark)."""

    dir: str  # folder of programs (+ NAME.png references), of bare images, or a rows file / save_to_disk dir
    kind: Literal["auto", "programs", "images", "rows"] = "auto"  # auto: decided from what `dir` holds
    language: Optional[str] = None  # needed for bare images; otherwise keeps only that language's entries
    references_dir: Optional[str] = None  # render cache for programs without a PNG; null: artifacts/references/
    limit: Optional[int] = None  # read only the first N entries in name order; null: all
    workers: int = 2  # render processes for references without a PNG (per renderer kind)
    timeout: float = 30.0  # seconds per reference render; a failure is a bad row (see on_bad_row)
    render: Optional[RenderOptions] = None  # how those references are drawn; null: as the model renders answers (EvalModule.render_options), else RenderOptions()


class VinciDataModule(L.LightningDataModule):
    def __init__(
        self,
        stage: Literal["sft", "rl"] = "sft",
        train: Optional[str] = None,
        val: Optional[str] = None,
        test: Optional[str] = None,
        synthetic: Optional[Synthetic] = None,
        benchmark: Optional[Benchmark] = None,
        processor: str = "artifacts/tiny-vlm",
        batch_size: int = 8,
        num_workers: int = 0,
        min_pixels: int = 56 * 56,
        max_pixels: int = 224 * 224,
        max_length: int = 1024,
        on_bad_row: Literal["raise", "skip"] = "raise",
        schema: Literal["auto", "sft", "sharegpt", "rl", "columns"] = "auto",
        columns: Optional[dict[str, str]] = None,
        validate: Literal["lazy", "full"] = "lazy",
        num_proc: Optional[int] = None,
    ):
        """
        Args:
            stage: "sft" gives SFT batches (labels masked to the answer); "rl" gives left-padded prompts.
            train: rows for training: a file, a folder of shards, a glob, a save_to_disk folder, or a
                hub id (org/name, org/name:config@split); default: the synthetic corpus's split.
            val: rows for validation; default: the synthetic corpus's split, none without a corpus.
            test: rows for `test`; default: the synthetic corpus's held-out split.
            synthetic: build and use the procedural corpus when files are not given.
            benchmark: a benchmark folder (ChartMimic-style programs with PNGs, programs whose
                references are rendered once and cached, bare images for predict) or rows file;
                when set, validate/test/predict read it instead of val/test. Batches carry each
                entry's id (NAME) and source path.
            processor: model directory or hub id whose processor tokenises (linked to the model's).
            batch_size: examples per batch (prompts per batch for the rl stage).
            num_workers: DataLoader worker processes (kept alive across epochs and validations).
            min_pixels: images smaller than this many pixels are scaled up.
            max_pixels: images larger than this many pixels are scaled down.
            max_length: longest sequence in tokens (prompt + answer for sft, prompt for rl);
                longer rows are dropped, never truncated, since truncation would cut image tokens.
            on_bad_row: "raise" stops at the first bad row with its file, row and field;
                "skip" drops bad rows and counts them by reason (logged).
            schema: row schema (vinci.data.schemas): auto | sft (messages) | sharegpt
                (conversations) | rl (problem/answer) | columns (needs `columns`).
            columns: for any other table, which column holds what: {prompt: COL, image: COL,
                answer: COL, language: COL} (prompt and image required).
            validate: "lazy" checks a row when it is first read (constant time to the first
                batch); "full" checks every row, image and length before training.
            num_proc: processes for loading and for the full check; null: one.
        """
        super().__init__()
        self.save_hyperparameters()
        self.stage = stage
        self.synthetic = synthetic
        self.benchmark = benchmark
        self.paths = {"train": train, "val": val, "test": test}
        self.processor_name = processor
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.read_kwargs = dict(on_bad_row=on_bad_row, min_pixels=min_pixels, max_pixels=max_pixels)
        self.row_kwargs = dict(schema=schema, columns=columns, validate=validate, num_proc=num_proc)
        self.processor = None
        self.datasets: dict[str, Dataset] = {}
        self.current_stage: Optional[str] = None

    def prepare_data(self) -> None:
        if self.synthetic is None:
            return
        corpus = Path(self.synthetic.dir)
        if (corpus / "manifest.json").is_file():
            return
        from vinci.data.synth import build_corpus

        s = self.synthetic
        log.info("building the synthetic corpus in %s", corpus)
        build_corpus(
            corpus,
            seed=s.seed,
            n_train=s.n_train,
            n_val=s.n_val,
            n_test=s.n_test,
            languages=s.languages,
            refine_fraction=s.refine_fraction,
        )

    def split_path(self, split: str) -> Optional[str]:
        """The source a split reads: the explicit one, else the synthetic corpus's file."""
        if self.paths[split]:
            return str(self.paths[split])
        if self.synthetic is not None:
            return str(Path(self.synthetic.dir) / f"{self.stage}_{split}.jsonl")
        return None

    def load_split(self, split: str) -> Optional[Dataset]:
        from vinci.data.rows import read_rows

        if split == "benchmark":
            return self.load_benchmark()
        path = self.split_path(split)
        if path is None:
            return None
        rows = read_rows(path, role=split, require_answer=self.stage == "sft", **self.row_kwargs, **self.read_kwargs)
        if not rows.validated:
            rows.check = self.length_check()
            rows[0]  # one usable row, or a clear error now rather than at step 1  # noqa: B018
            return rows
        return self.filter_long(rows, path)

    def length_check(self):
        from vinci.data.lengths import LengthCheck

        return LengthCheck(self.processor, self.stage, self.max_length)

    def load_benchmark(self) -> Dataset:
        from vinci.data.benchmark import read_benchmark

        b = self.benchmark
        render = b.render
        if render is None:  # draw missing references the way the model's answers will be drawn
            model = self.trainer.lightning_module if self.trainer is not None else None
            render = getattr(model, "render_options", None)
        entries = read_benchmark(b.dir, kind=b.kind, language=b.language, references_dir=b.references_dir,
                                 render_options=render, workers=b.workers, timeout=b.timeout, limit=b.limit,
                                 **self.read_kwargs)
        if self.stage == "sft" and any(row.answer is None for row in entries.rows):
            raise ValueError(f"{b.dir}: entries without a reference program make no SFT batches; set data.stage: rl")
        if len(entries) == 0:
            raise ValueError(f"{b.dir}: the benchmark has no usable entries")
        return self.filter_long(entries, Path(b.dir))

    def filter_long(self, rows, path):
        """Drop rows longer than max_length tokens (never truncate) or refused by the processor.

        Lengths are counted without decoding any image (vinci.data.lengths), in batches of
        rows, with a progress bar.
        """
        from collections import Counter

        from tqdm.auto import tqdm

        check, keep, dropped, first = self.length_check(), [], Counter(), {}
        step = 512
        for start in tqdm(range(0, len(rows), step), desc=f"counting tokens of {path}", disable=len(rows) <= step,
                          unit_scale=step):
            chunk = rows.rows[start:start + step]
            problems = check.problems([r.prompt for r in chunk], [r.answer for r in chunk], [r.image_size for r in chunk])
            for offset, (row, problem) in enumerate(zip(chunk, problems)):
                if problem is None:
                    keep.append(start + offset)
                    continue
                if problem[0] != "too long" and self.read_kwargs["on_bad_row"] == "raise":
                    from vinci.data.errors import BadRowError

                    raise BadRowError(str(path), row.index, None, *problem)
                dropped[problem[0]] += 1
                first.setdefault(problem[0], f"{row.source}: {problem[1]}")
        if dropped:
            counts = ", ".join(f"{reason}={n}" for reason, n in sorted(dropped.items()))
            log.warning("%s: dropped %d of %d rows (%s; max_length=%d)", path, sum(dropped.values()), len(rows),
                        counts, self.max_length)
        if not keep:
            raise ValueError(f"{path}: no row fits: {dict(dropped)} (first: {'; '.join(first.values())})")
        selected = rows.select(keep)
        for reason, n in dropped.items():
            selected.skipped[reason] = selected.skipped.get(reason, 0) + n
        return selected

    def setup(self, stage: str) -> None:
        if self.processor is None:
            from vinci.backbone import load_processor

            self.processor = load_processor(self.processor_name)
        self.current_stage = stage  # which split val_dataloader serves: fit validates on val
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}[stage]
        if stage != "fit" and self.benchmark is not None:
            wanted = ("benchmark",)
        for split in wanted:
            if split not in self.datasets:
                dataset = self.load_split(split)
                if dataset is not None:
                    self.datasets[split] = dataset
        if stage == "fit" and "train" not in self.datasets:
            raise ValueError("no training rows: set data.train or data.synthetic")

    def collate(self):
        return SFTCollator(self.processor) if self.stage == "sft" else RLCollator(self.processor)

    def feeds_cuda(self) -> bool:
        """Whether batches go to a CUDA device: then they are pinned, so the copy can overlap compute."""
        from lightning.pytorch.accelerators import CUDAAccelerator

        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def _loader(self, split: str, shuffle: bool):
        if split not in self.datasets:
            return []
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            drop_last=shuffle and self.stage == "rl",
            pin_memory=self.feeds_cuda(),
            # workers live as long as the loader: validation would otherwise fork new ones from the
            # multi-GB trainer process at every check
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def _eval_split(self, default: str) -> str:
        """The benchmark outside fit when one is set, else the given split."""
        return "benchmark" if self.benchmark is not None and self.current_stage != "fit" else default

    def val_dataloader(self):
        return self._loader(self._eval_split("val"), shuffle=False)

    def test_dataloader(self):
        return self._loader(self._eval_split("test"), shuffle=False)

    def predict_dataloader(self):
        return self._loader(self._eval_split("test"), shuffle=False)
