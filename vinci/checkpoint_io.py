"""Checkpoints written beside their target and renamed into place.

Lightning's default writes a local checkpoint through an fsspec transaction, which stages it in
the system temp directory (often RAM-backed) and moves it at the end; a run killed mid-save
leaves that temp file behind. Here the staging file sits next to `last.ckpt` (same filesystem,
so the rename is atomic), and the next save removes any a killed run left.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vinci.leftovers import remove_dead

PARTIAL = ".partial-"


class LocalAtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_dead(target.parent.glob(f".{target.name}{PARTIAL}*"))
        staged = target.with_name(f".{target.name}{PARTIAL}{os.getpid()}")
        try:
            with open(staged, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
