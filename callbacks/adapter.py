"""Export the LoRA adapter in standard PEFT format at every checkpoint and at the end of fit.

    <dirpath>/step_<N>/   the adapter after optimizer step N, one per checkpoint
    <dirpath>/last        -> step_<newest> (a symlink, swapped atomically)

Each folder holds `adapter_config.json`, `adapter_model.safetensors` and the processor, so
`PeftModel.from_pretrained(base, folder)` and `AutoProcessor.from_pretrained(folder)` load it
with no vinci code; vinci itself also accepts `<dirpath>` and reads `last`. The ViRL stage starts
from the folder the SFT stage writes.

A folder is written under a temporary name beside its target and renamed into place, so a
killed run leaves either the previous adapter or the new one, never a half-written one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import lightning as L

from vinci.backbone import save_adapter

log = logging.getLogger(__name__)

PARTIAL = ".partial-"  # prefix of folders still being written (or left by a killed run)


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete step_N folder under `root`, oldest first."""
    found = []
    for path in root.glob("step_*"):
        suffix = path.name[len("step_"):]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found)


def replace_dir(staged: Path, target: Path) -> None:
    """Move the finished folder `staged` to `target`, replacing what is there."""
    if target.exists() or target.is_symlink():
        old = target.with_name(f"{PARTIAL}old-{target.name}-{os.getpid()}")
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, target)


def point_last(root: Path, target: Path) -> None:
    """Make `root/last` a symlink to `target` in one rename."""
    link = root / f"{PARTIAL}last-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target.name, link)
    last = root / "last"
    if last.is_dir() and not last.is_symlink():  # a real folder from an earlier layout
        shutil.rmtree(last)
    os.replace(link, last)


class AdapterExport(L.Callback):
    def __init__(self, dirpath: str = "runs/sft/adapter", keep_steps: Optional[int] = None):
        """
        Args:
            dirpath: the run's adapter folder: step_N/ per checkpoint and last/ -> the newest.
            keep_steps: keep only the newest this many step_N folders (None = keep all).
        """
        if keep_steps is not None and keep_steps < 1:
            raise ValueError(f"keep_steps must be >= 1 or None, got {keep_steps}")
        self.dirpath = Path(dirpath)
        self.keep_steps = keep_steps
        self.written_step: Optional[int] = None

    def setup(self, trainer, module, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and self.dirpath.is_dir():
            for leftover in self.dirpath.glob(f"{PARTIAL}*"):  # from a run killed mid-write
                if leftover.is_symlink() or leftover.is_file():
                    leftover.unlink()
                else:
                    shutil.rmtree(leftover, ignore_errors=True)

    def export(self, trainer: L.Trainer, module: L.LightningModule) -> Optional[Path]:
        """Write step_<global step> (once per step of this run) and point last at it."""
        if not trainer.is_global_zero or module.model is None:
            return None
        self.dirpath.mkdir(parents=True, exist_ok=True)
        target = self.dirpath / f"step_{trainer.global_step}"
        if self.written_step != trainer.global_step:  # fit end right after a checkpoint: same weights
            staged = self.dirpath / f"{PARTIAL}{target.name}-{os.getpid()}"
            shutil.rmtree(staged, ignore_errors=True)
            save_adapter(module.model, module.processor, staged, module.backbone)
            replace_dir(staged, target)
            self.written_step = trainer.global_step
        point_last(self.dirpath, target)
        if self.keep_steps is not None:
            for _, old in step_dirs(self.dirpath)[: -self.keep_steps]:
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        return target

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        self.export(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        target = self.export(trainer, module)
        if target is not None:
            log.info("adapter written to %s (and %s)", target, self.dirpath / "last")
