"""PredictionWriter: `predict` writes predictions.jsonl, the images and report.html as it goes.

    output_dir/
      predictions.jsonl     one `Prediction.to_json()` per line, appended and flushed per batch
      renders/ID.png        render of each sample that rendered, at its rendered size
      references/ID.png     reference image of each sample as the model saw it (fitted to max_pixels)
      report.html           written at the end from what is on disk (`vinci.eval.report`)

Each batch is on disk (lines flushed and fsynced) before the next one starts, so a run that
dies keeps every finished batch; `write_report(read_predictions(...), output_dir)` turns what
was kept into a report. Once a prediction's images are saved, the in-memory images are
dropped and the paths set instead, so what `Trainer.predict` returns stays small (set
`return_predictions=False` to keep nothing at all).

Runs are never mixed silently: at predict start, a folder that already holds a
predictions*.jsonl makes the run fail with an error, unless `overwrite=True`, which first
deletes the previous run's predictions*.jsonl, report.html, renders/ and references/ (and
nothing else in the folder).

Two samples with the same id would overwrite each other's images, so a repeated id gets a
suffix ("-2", "-3", ...) and a warning.

DDP: each rank appends to its own file (`predictions.jsonl` on a single process,
`predictions.rank{R}.jsonl` under several), so lines of two processes never interleave. At
predict end all ranks meet at a barrier and rank 0 alone reads every rank's file and writes
the report; a sample that DistributedSampler repeated to even out the ranks appears in the
report once (first by id). Limitations: ids are made unique per rank only, so two different
samples with the same id on two ranks share image files; the folder must be on a file system
every rank sees; and the merged lines stay in their per-rank files (no single
predictions.jsonl is written under DDP).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning.pytorch.callbacks import BasePredictionWriter

from vinci.eval.records import PREDICTIONS_FILE, REFERENCES_DIR, RENDERS_DIR, Prediction, read_predictions
from vinci.eval.report import REPORT_FILE, write_report

log = logging.getLogger(__name__)


def predictions_file(rank: int, world_size: int) -> str:
    """The file one rank appends to."""
    return PREDICTIONS_FILE if world_size <= 1 else f"predictions.rank{rank}.jsonl"


def previous_outputs(out_dir: Path) -> list[Path]:
    """What an earlier run left in out_dir (only the names this writer creates)."""
    names = sorted(out_dir.glob("predictions*.jsonl")) + [out_dir / n for n in (REPORT_FILE, RENDERS_DIR, REFERENCES_DIR)]
    return [path for path in names if path.exists()]


def merged_predictions(out_dir: Path) -> list[Prediction]:
    """Every rank's predictions, rank files in name order, each id once (the first)."""
    seen: set[str] = set()
    merged = []
    for path in sorted(out_dir.glob("predictions*.jsonl")):
        for prediction in read_predictions(path):
            if prediction.id not in seen:
                seen.add(prediction.id)
                merged.append(prediction)
    return merged


class PredictionWriter(BasePredictionWriter):
    def __init__(self, output_dir: str, write_interval: str = "batch", overwrite: bool = False, title: Optional[str] = None):
        """
        Args:
            output_dir: folder of predictions.jsonl, renders/, references/ and report.html.
            write_interval: only "batch" (each batch is saved as soon as it is predicted).
            overwrite: delete a previous run's outputs in output_dir instead of failing.
            title: heading of report.html; None = "vinci predictions: <output_dir>".
        """
        if write_interval != "batch":
            raise ValueError(f"PredictionWriter writes every batch so a failed run keeps its work; got write_interval={write_interval!r}")
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.title = title or f"vinci predictions: {output_dir}"
        self.path: Optional[Path] = None  # this rank's jsonl, set at predict start
        self.seen: dict[str, int] = {}  # id -> how many samples used it

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._claim_folder()
        trainer.strategy.barrier()  # no rank writes before rank 0 cleared the folder
        self.path = self.output_dir / predictions_file(trainer.global_rank, trainer.world_size)
        self.path.touch()
        self.seen.clear()

    def _claim_folder(self) -> None:
        old = previous_outputs(self.output_dir)
        if old and not self.overwrite:
            names = ", ".join(p.name for p in old)
            raise FileExistsError(
                f"{self.output_dir} already holds a previous run ({names}); choose another output_dir "
                "or set overwrite: true on PredictionWriter to delete it"
            )
        for path in old:
            log.warning("overwrite: deleting %s from a previous run", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _unique(self, prediction: Prediction) -> None:
        uses = self.seen.get(prediction.id, 0) + 1
        self.seen[prediction.id] = uses
        if uses > 1:
            renamed = f"{prediction.id}-{uses}"
            while renamed in self.seen:  # a real id may already look like a renamed one
                uses += 1
                renamed = f"{prediction.id}-{uses}"
            self.seen[prediction.id] = uses
            log.warning("sample id %r repeats; writing it as %r", prediction.id, renamed)
            prediction.id = renamed
            self.seen[renamed] = 1

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Sequence[Prediction], batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        lines = []
        for sample in prediction:
            if not isinstance(sample, Prediction):
                raise TypeError(f"predict_step must return list[Prediction]; got an item of type {type(sample).__name__}")
            self._unique(sample)
            sample.save_images(self.output_dir)
            lines.append(sample.to_json() + "\n")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()  # every rank's lines are on disk
        if trainer.is_global_zero:
            report = write_report(merged_predictions(self.output_dir), self.output_dir, title=self.title)
            log.info("report: %s", report.resolve())
