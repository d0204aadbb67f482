"""The LightningDataModule: where rows come from, which collate they get, and length filtering.

    rows (jsonl / json / parquet / save_to_disk dir, or the built-in synthetic corpus)
      -> read_rows -> Example -> (over-long prompts filtered out) -> SFTCollator | RLCollator

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
    ):
        """
        Args:
            stage: "sft" gives SFT batches (labels masked to the answer); "rl" gives left-padded prompts.
            train: rows file or directory for training; default: the synthetic corpus's split.
            val: rows for validation; default: the synthetic corpus's split, none without a corpus.
            test: rows for `test`; default: the synthetic corpus's held-out split.
            synthetic: build and use the procedural corpus when files are not given.
            benchmark: a benchmark folder (ChartMimic-style programs with PNGs, programs whose
                references are rendered once and cached, bare images for predict) or rows file;
                when set, validate/test/predict read it instead of val/test. Batches carry each
                entry's id (NAME) and source path.
            processor: model directory or hub id whose processor tokenises (linked to the model's).
            batch_size: examples per batch (prompts per batch for the rl stage).
            num_workers: DataLoader worker processes.
            min_pixels: images smaller than this many pixels are scaled up.
            max_pixels: images larger than this many pixels are scaled down.
            max_length: longest sequence in tokens (prompt + answer for sft, prompt for rl);
                longer rows are dropped, never truncated, since truncation would cut image tokens.
            on_bad_row: "raise" stops at the first bad row with its file, row and field;
                "skip" drops bad rows and logs one summary.
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

    def split_path(self, split: str) -> Optional[Path]:
        """The file a split reads: the explicit one, else the synthetic corpus's."""
        if self.paths[split]:
            return Path(self.paths[split])
        if self.synthetic is not None:
            return Path(self.synthetic.dir) / f"{self.stage}_{split}.jsonl"
        return None

    def load_split(self, split: str) -> Optional[Dataset]:
        from vinci.data.rows import read_rows

        if split == "benchmark":
            return self.load_benchmark()
        path = self.split_path(split)
        if path is None:
            return None
        rows = read_rows(path, schema=self.stage, **self.read_kwargs)
        return self.filter_long(rows, path)

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

    def filter_long(self, rows, path: Path):
        """Drop rows longer than max_length tokens (never truncate), and say how many.

        Lengths are counted without decoding any image: the text is tokenised with the chat
        template, and the image's token count (which depends only on its fitted size) is
        measured once per distinct size on a blank image through the real processor.
        """
        from vinci.data.collate import full_text, prompt_text

        image_tokens: dict[tuple[int, int], int] = {}
        keep = []
        for index, row in enumerate(rows.rows):
            if row.image_size not in image_tokens:
                image_tokens[row.image_size] = self._image_token_count(row.image_size)
            text = prompt_text(self.processor, row.prompt)
            if self.stage == "sft":
                text = full_text(self.processor, row.prompt, row.answer)
            length = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + image_tokens[row.image_size]
            if length <= self.max_length:
                keep.append(index)
        if len(keep) < len(rows):
            log.warning("%s: dropped %d of %d rows longer than max_length=%d", path, len(rows) - len(keep), len(rows), self.max_length)
        if not keep:
            raise ValueError(f"{path}: every row is longer than max_length={self.max_length} tokens")
        return rows.select(keep)

    def _image_token_count(self, size: tuple[int, int]) -> int:
        """Tokens an image of this size adds beyond the template's placeholder text."""
        from PIL import Image

        from vinci.data.collate import prompt_text

        text = prompt_text(self.processor, "<image>")
        plain = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        expanded = self.processor(text=[text], images=[Image.new("RGB", size, "white")], return_tensors="pt")
        return expanded["input_ids"].shape[1] - plain

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
